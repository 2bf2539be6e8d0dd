"""Official LLaDA folders: strict, streaming loading and export.

Format (GSAI-ML/LLaDA-8B-*): ``config.json`` (``model_type: llada``), safetensors weights either
as ``model.safetensors`` or as shards listed in ``model.safetensors.index.json``
(``{"metadata": {"total_size": N}, "weight_map": {tensor name: shard file}}``). Tensor names:

    model.transformer.wte.weight                         [vocab, d_model]
    model.transformer.blocks.{i}.attn_norm.weight        [d_model]
    model.transformer.blocks.{i}.{q,k,v}_proj.weight     [d_model | n_kv*head_dim, d_model]
    model.transformer.blocks.{i}.attn_out.weight         [d_model, d_model]
    model.transformer.blocks.{i}.ff_norm.weight          [d_model]
    model.transformer.blocks.{i}.{ff_proj,up_proj}.weight [mlp_hidden, d_model]
    model.transformer.blocks.{i}.ff_out.weight           [d_model, mlp_hidden]
    model.transformer.ln_f.weight                        [d_model]
    model.transformer.ff_out.weight                      [vocab, d_model]  (absent with weight_tying)

Loading builds the network on the meta device and reads one tensor at a time with
``safe_open`` straight to the target device and dtype, so peak memory is the model plus one
tensor. Every tensor of the checkpoint must be used and none may be missing.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch
from safetensors import safe_open
from torch import nn
from tqdm.auto import tqdm

from diffuspeech.atomic import save_tensors
from diffuspeech.errors import UserError

from .arch import LLaDAArch, arch_from_hf_config, arch_to_hf_config

if TYPE_CHECKING:
    from .backbone import LLaDABackbone

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
KEY_PREFIX = "model."  # official names = KEY_PREFIX + our state-dict names
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_SHOWN = 12  # keys listed per category in an error


class CheckpointMismatchError(UserError):
    """The checkpoint's tensors do not match the architecture (missing, unexpected, wrong shape)."""


def _folder(path: str | Path) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"backbone.path: {folder} is not a folder (expected an official LLaDA checkpoint folder)")
    return folder


def read_hf_config(path: str | Path) -> dict:
    cfg_path = _folder(path) / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"backbone.path: {cfg_path} not found; an LLaDA folder needs config.json")
    try:
        return json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{cfg_path}: not valid JSON: {exc}") from None


def read_arch(path: str | Path) -> LLaDAArch:
    """Architecture of an official LLaDA folder (from its config.json).

    Fields missing from config.json take the released LLaDA-8B values, except ``weight_tying``,
    which is then read off the weights (tied when there is no ``model.transformer.ff_out.weight``).
    """
    cfg = read_hf_config(path)
    if "weight_tying" not in cfg:
        cfg = {**cfg, "weight_tying": KEY_PREFIX + "transformer.ff_out.weight" not in weight_files(path)}
    return arch_from_hf_config(cfg, source=str(Path(path) / CONFIG_FILE))


def weight_files(path: str | Path) -> dict[str, Path]:
    """Tensor name -> safetensors file holding it."""
    folder = _folder(path)
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: has no 'weight_map' object")
        files = {name: folder / shard for name, shard in weight_map.items()}
        absent = sorted({str(p.name) for p in files.values() if not p.is_file()})
        if absent:
            raise FileNotFoundError(f"{index} lists shard(s) that are not in the folder: {', '.join(absent)}")
        return files
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
        hint = (
            f" Found {', '.join(pickled)}: pickle checkpoints are not loaded (unpickling runs code); "
            "convert them to safetensors first." if pickled else ""
        )
        raise FileNotFoundError(f"{folder}: no {SINGLE_FILE} and no {INDEX_FILE}.{hint}")
    files: dict[str, Path] = {}
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            for name in f.keys():
                if name in files:
                    raise ValueError(f"{folder}: tensor {name} is in both {files[name].name} and {shard.name}")
                files[name] = shard
    return files


def _listing(kind: str, names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    more = f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
    return f"{len(names)} {kind} tensor(s): {shown}{more}"


def check_keys(expected: set[str], present: set[str], folder: Path) -> None:
    missing, unexpected = sorted(expected - present), sorted(present - expected)
    if missing or unexpected:
        parts = ([_listing("missing", missing)] if missing else []) + ([_listing("unexpected", unexpected)] if unexpected else [])
        raise CheckpointMismatchError(
            f"{folder}: the checkpoint does not match the architecture in its config.json: "
            + "; ".join(parts)
            + ". Every tensor must be used and none may be missing: check n_layers and weight_tying in "
            "config.json, and that the folder holds an official LLaDA checkpoint (model.transformer.* names)."
        )


@torch.no_grad()
def load_llada_weights(model: nn.Module, path: str | Path, dtype: torch.dtype, device: torch.device) -> None:
    """Fill ``model`` (built on the meta device) from an official folder, tensor by tensor."""
    folder = _folder(path)
    params = dict(model.named_parameters())
    expected = {KEY_PREFIX + name: name for name in params}
    files = weight_files(folder)
    check_keys(set(expected), set(files), folder)

    by_shard: dict[Path, list[str]] = defaultdict(list)
    for key, shard in files.items():
        by_shard[shard].append(key)
    open_device = "cpu" if device.type == "meta" else str(device)
    bad_shapes: list[str] = []
    progress = tqdm(total=len(files), desc=f"loading {folder.name}", unit="tensor", disable=len(files) < 64)
    for shard in sorted(by_shard):
        with safe_open(str(shard), framework="pt", device=open_device) as f:
            in_file = set(f.keys())
            absent = sorted(set(by_shard[shard]) - in_file)
            if absent:
                raise CheckpointMismatchError(
                    f"{folder / INDEX_FILE} maps tensors to {shard.name} that it does not hold: {', '.join(absent[:_SHOWN])}"
                )
            for key in sorted(by_shard[shard]):
                name = expected[key]
                target = params[name]
                shape = tuple(f.get_slice(key).get_shape())
                if shape != tuple(target.shape):
                    bad_shapes.append(f"{key} is {list(shape)}, expected {list(target.shape)}")
                    progress.update(1)
                    continue
                stored = f.get_tensor(key)
                tensor = stored.to(dtype=dtype)
                if tensor.data_ptr() == stored.data_ptr():
                    # on CPU in the stored dtype, safetensors returns a view of the memory-mapped
                    # file: own the memory, so later writes to the file cannot reach the model
                    tensor = tensor.clone()
                del stored
                _assign(model, name, tensor, target.requires_grad)
                progress.update(1)
    progress.close()
    if bad_shapes:
        raise CheckpointMismatchError(
            f"{folder}: {len(bad_shapes)} tensor(s) have the wrong shape for config.json: "
            + "; ".join(bad_shapes[:_SHOWN])
        )
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:  # cannot happen after check_keys; kept as a guard against silent random weights
        raise CheckpointMismatchError(f"{folder}: parameters left unloaded: {', '.join(left[:_SHOWN])}")


def _assign(model: nn.Module, name: str, tensor: torch.Tensor, requires_grad: bool) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    module._parameters[leaf] = nn.Parameter(tensor, requires_grad=requires_grad)


# --------------------------------------------------------------------------- export
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def save_llada_folder(
    model: LLaDABackbone,
    out_dir: str | Path,
    max_shard_bytes: int = 5 * 1024**3,
    dtype: Optional[str] = None,
    copy_files_from: Optional[str | Path] = None,
) -> Path:
    """Write ``model`` as an official LLaDA folder; returns the folder.

    Shards hold at most ``max_shard_bytes`` each (one tensor may exceed it); with more than one
    shard an index is written. Only one shard is held in host memory at a time. Non-weight files
    of ``copy_files_from`` (tokenizer, modeling code) are copied. Note: after a vocabulary
    extension the copied tokenizer does not know the new ids; the unified vocabulary does.
    """
    out = Path(out_dir).expanduser()
    if out.exists() and any(out.glob("*.safetensors")) or (out / CONFIG_FILE).exists():
        raise FileExistsError(f"{out} already holds a checkpoint; export into a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    params = list(model.named_parameters())
    target = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(dtype or "", None)
    if dtype is not None and target is None:
        raise ValueError(f"export dtype {dtype!r}: valid are float32, bfloat16")
    target = target or params[0][1].dtype
    itemsize = torch.empty((), dtype=target).element_size()

    shards: list[list[tuple[str, torch.Tensor]]] = [[]]
    size = 0
    for name, p in params:
        nbytes = p.numel() * itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((KEY_PREFIX + name, p))
        size += nbytes
    count = len(shards)
    weight_map: dict[str, str] = {}
    total = 0
    for i, shard in enumerate(tqdm(shards, desc=f"writing {out.name}", unit="shard", disable=count < 2)):
        fname = SINGLE_FILE if count == 1 else f"model-{i + 1:05d}-of-{count:05d}.safetensors"
        tensors = {key: p.detach().to(device="cpu", dtype=target).contiguous() for key, p in shard}
        save_tensors(tensors, str(out / fname), metadata={"format": "pt"})
        for key, t in tensors.items():
            weight_map[key] = fname
            total += t.numel() * t.element_size()
        del tensors
    if count > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    cfg = arch_to_hf_config(model.arch, torch_dtype=_DTYPE_NAMES.get(target, "float32"))
    (out / CONFIG_FILE).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    if copy_files_from:
        src = Path(copy_files_from)
        for item in sorted(src.iterdir()):
            if item.is_file() and item.name not in (CONFIG_FILE, INDEX_FILE) and item.suffix not in _WEIGHT_SUFFIXES:
                shutil.copy2(item, out / item.name)
    return out
