"""Reading unit HiFi-GAN checkpoints in three formats into :class:`UnitHifigan`.

- ``diffuspeech``: a folder with ``vocoder.json`` (``{"format": ..., "arch": {...}}``) and
  ``generator.safetensors`` (the :class:`UnitHifigan` state dict). Written by
  ``diffuspeech train-vocoder`` and ``diffuspeech convert-vocoder``.
- ``speechbrain``: a folder with ``hyperparams.yaml`` (a ``generator:`` node tagged
  ``!new:speechbrain.lobes.models.HifiGAN.UnitHifiganGenerator``) and ``generator.ckpt``
  (``torch.save`` of the generator's state dict, as speechbrain's Checkpointer writes it).
  The YAML is read without instantiating anything: only that one class is accepted.
- ``codehifigan``: fairseq/textlesslib/SpiritLM ``config.json`` plus a checkpoint whose
  ``"generator"`` entry is the CodeGenerator state dict; keys are mapped onto speechbrain's
  module (``dict`` -> shifted ``unit_embedding``, ``weight_g/weight_v`` -> weight-norm
  parametrizations, ``spkr`` -> speaker table, ``dur_predictor`` -> duration predictor).

Every loader checks that *every* weight was used and every parameter was filled (speechbrain's
own loader is non-strict and only warns), and all torch files load with ``weights_only=True``.
"""

from __future__ import annotations

import inspect
import io
import json
import re
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file

from diffuspeech.atomic import save_tensors
from diffuspeech.errors import UserError

from .arch import UnitHifigan, UnitHifiganArch

FORMATS = ("auto", "diffuspeech", "speechbrain", "codehifigan")
DIFFUSPEECH_META = "vocoder.json"
DIFFUSPEECH_WEIGHTS = "generator.safetensors"
DIFFUSPEECH_FORMAT_TAG = "diffuspeech-unit-hifigan"
SPEECHBRAIN_CLASS = "speechbrain.lobes.models.HifiGAN.UnitHifiganGenerator"
CODEHIFIGAN_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


class CheckpointError(UserError):
    """A vocoder checkpoint that is missing, malformed, or does not fit its architecture."""


# ----------------------------------------------------------------------------- detection
def detect_format(path: Path) -> str:
    folder = path if path.is_dir() else path.parent
    if (folder / DIFFUSPEECH_META).is_file():
        return "diffuspeech"
    if (folder / "hyperparams.yaml").is_file():
        return "speechbrain"
    if (folder / "config.json").is_file():
        return "codehifigan"
    raise CheckpointError(
        f"{path}: cannot tell the vocoder checkpoint format: expected {DIFFUSPEECH_META} (diffuspeech), "
        f"hyperparams.yaml (speechbrain) or config.json (codehifigan) in {folder}; or set vocoder.format"
    )


def load_unit_hifigan(path: str | Path, fmt: str = "auto", checkpoint: str = "") -> tuple[UnitHifigan, str]:
    """Load any supported format; returns ``(module in eval mode, format name)``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"vocoder checkpoint not found: {path}")
    if fmt not in FORMATS:
        raise CheckpointError(f"vocoder.format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "auto":
        fmt = detect_format(path)
    loader = {"diffuspeech": load_diffuspeech, "speechbrain": load_speechbrain, "codehifigan": load_codehifigan}[fmt]
    model = loader(path, checkpoint)
    return model.eval(), fmt


# ----------------------------------------------------------------------------- state dicts
def _normalize_weight_norm(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Bring weight-norm keys to the expected layout.

    Accepts the old ``weight_g``/``weight_v`` names, the parametrization names
    (``parametrizations.weight.original0/1``) and plain ``weight`` (weight norm removed: then
    g = ||w|| over all but dim 0 and v = w, which reproduces w exactly).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(".weight_g"):
            key = key[: -len(".weight_g")] + ".parametrizations.weight.original0"
        elif key.endswith(".weight_v"):
            key = key[: -len(".weight_v")] + ".parametrizations.weight.original1"
        elif key.endswith(".weight") and key not in expected:
            stem = key[: -len(".weight")]
            if stem + ".parametrizations.weight.original1" in expected:
                dims = tuple(range(1, value.dim()))
                out[stem + ".parametrizations.weight.original0"] = value.norm(dim=dims, keepdim=True)
                key = stem + ".parametrizations.weight.original1"
        out[key] = value
    return out


def _listing(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_strict(model: UnitHifigan, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``, failing with the full list of missing/unexpected/mis-shaped keys."""
    expected = model.state_dict()
    state = _normalize_weight_norm(state, expected)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k} (checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)})"
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing weights: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weights: {_listing(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_listing(shapes)}")
    if problems:
        raise CheckpointError(
            f"{source}: checkpoint does not match the architecture its config describes; "
            + "; ".join(problems)
            + ". Check that the config file belongs to this checkpoint"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle errors vary
        raise CheckpointError(
            f"{path}: cannot be read with torch.load(weights_only=True) ({type(exc).__name__}: {exc}). "
            f"Only plain tensor checkpoints are loaded: arbitrary pickles can run code"
        ) from None


# ----------------------------------------------------------------------------- diffuspeech
def save_diffuspeech(model: UnitHifigan, folder: str | Path, extra: dict | None = None) -> Path:
    """Write ``vocoder.json`` + ``generator.safetensors`` into ``folder`` (created)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_tensors(state, str(folder / DIFFUSPEECH_WEIGHTS))
    meta = {"format": DIFFUSPEECH_FORMAT_TAG, "arch": model.arch.to_dict(), **(extra or {})}
    (folder / DIFFUSPEECH_META).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def load_diffuspeech(path: Path, checkpoint: str = "") -> UnitHifigan:
    folder = path if path.is_dir() else path.parent
    meta_path = folder / DIFFUSPEECH_META
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable ({exc})") from None
    if meta.get("format") != DIFFUSPEECH_FORMAT_TAG or "arch" not in meta:
        raise CheckpointError(f"{meta_path}: not a diffuspeech unit HiFi-GAN description (format {meta.get('format')!r})")
    try:
        arch = UnitHifiganArch.from_dict(meta["arch"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{meta_path}: {exc}") from None
    weights = folder / (checkpoint or (path.name if path.is_file() else DIFFUSPEECH_WEIGHTS))
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file not found next to {meta_path}")
    model = UnitHifigan(arch)
    load_state_strict(model, load_file(str(weights)), str(weights))
    return model


# ----------------------------------------------------------------------------- speechbrain
class _Tagged:
    """A YAML node carrying a hyperpyyaml tag (``!new:``, ``!name:`` ...) - never instantiated."""

    def __init__(self, tag: str, value: Any) -> None:
        self.tag, self.value = tag, value


class _InertLoader(yaml.SafeLoader):
    """Safe YAML loader that keeps hyperpyyaml tags as data instead of running them."""


def _construct_tagged(loader: _InertLoader, suffix: str, node: yaml.Node) -> _Tagged:
    if isinstance(node, yaml.MappingNode):
        value: Any = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return _Tagged(suffix, value)


_InertLoader.add_multi_constructor("!", _construct_tagged)


def read_speechbrain_generator_args(yaml_path: Path) -> dict[str, Any]:
    """The keyword arguments of the ``UnitHifiganGenerator`` declared in a hyperparams.yaml."""
    from hyperpyyaml import resolve_references  # resolves !ref without instantiating objects

    try:
        resolved = resolve_references(io.StringIO(yaml_path.read_text())).getvalue()
        data = yaml.load(resolved, Loader=_InertLoader)  # noqa: S506 - inert loader, see class
    except Exception as exc:  # noqa: BLE001 - yaml/hyperpyyaml raise many types
        raise CheckpointError(f"{yaml_path}: cannot parse ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{yaml_path}: expected a mapping at the top level")
    node = data.get("generator")
    if node is None:
        candidates = [k for k, v in data.items() if isinstance(v, _Tagged) and v.tag.endswith(SPEECHBRAIN_CLASS)]
        if len(candidates) != 1:
            raise CheckpointError(f"{yaml_path}: no 'generator:' entry declaring {SPEECHBRAIN_CLASS}")
        node = data[candidates[0]]
    if not isinstance(node, _Tagged) or node.tag != f"new:{SPEECHBRAIN_CLASS}":
        got = f"!{node.tag}" if isinstance(node, _Tagged) else type(node).__name__
        raise CheckpointError(
            f"{yaml_path}: 'generator' must be '!new:{SPEECHBRAIN_CLASS}' (got {got}); other classes are not "
            f"loaded because a YAML tag can name any Python callable"
        )
    if not isinstance(node.value, dict):
        raise CheckpointError(f"{yaml_path}: the generator node must be a mapping of constructor arguments")
    args = dict(node.value)
    params = inspect.signature(UnitHifiganGeneratorArgs.target()).parameters
    unknown = sorted(set(args) - set(params))
    if unknown:
        raise CheckpointError(f"{yaml_path}: unknown UnitHifiganGenerator arguments {unknown}")
    for key, value in args.items():
        if isinstance(value, _Tagged):
            raise CheckpointError(f"{yaml_path}: generator argument {key!r} is a !{value.tag} object; expected a plain value")
    return args


class UnitHifiganGeneratorArgs:
    """Maps speechbrain constructor arguments onto :class:`UnitHifiganArch`."""

    @staticmethod
    def target():
        from speechbrain.lobes.models.HifiGAN import UnitHifiganGenerator

        return UnitHifiganGenerator

    @staticmethod
    def to_arch(args: dict[str, Any], sample_rate: int, source: str) -> UnitHifiganArch:
        defaults = {k: p.default for k, p in inspect.signature(UnitHifiganGeneratorArgs.target()).parameters.items()}
        get = lambda key: args.get(key, defaults.get(key))  # noqa: E731
        if get("skip_token_embedding"):
            raise CheckpointError(f"{source}: skip_token_embedding=True vocoders take continuous features, not unit ids")
        if get("multi_speaker"):
            raise CheckpointError(
                f"{source}: multi_speaker speechbrain vocoders need an external speaker-embedding vector per "
                f"utterance, which the unit vocoder interface does not carry; use a single-speaker checkpoint"
            )
        if int(get("out_channels")) != 1 or int(get("cond_channels") or 0) != 0 or not get("conv_post_bias"):
            raise CheckpointError(f"{source}: only out_channels=1, cond_channels=0, conv_post_bias=True generators are supported")
        if int(get("in_channels")) != int(get("embedding_dim")):
            raise CheckpointError(
                f"{source}: in_channels ({get('in_channels')}) must equal embedding_dim ({get('embedding_dim')}) "
                f"for a single-speaker unit vocoder"
            )
        vocab = int(get("vocab_size"))
        return UnitHifiganArch(
            num_units=vocab - 1,
            sample_rate=sample_rate,
            embedding_dim=int(get("embedding_dim")),
            upsample_initial_channel=int(get("upsample_initial_channel")),
            upsample_factors=[int(u) for u in get("upsample_factors")],
            upsample_kernel_sizes=[int(k) for k in get("upsample_kernel_sizes")],
            resblock_type=str(get("resblock_type")),
            resblock_kernel_sizes=[int(k) for k in get("resblock_kernel_sizes")],
            resblock_dilation_sizes=[[int(d) for d in ds] for ds in get("resblock_dilation_sizes")],
            pooling_type=str(get("pooling_type")),
            duration_predictor="speechbrain" if get("duration_predictor") else "",
            var_pred_hidden_dim=int(get("var_pred_hidden_dim")),
            var_pred_kernel_size=int(get("var_pred_kernel_size")),
            var_pred_dropout=float(get("var_pred_dropout")),
            padding_mode="reflect",
        )


def _speechbrain_sample_rate(yaml_path: Path) -> int:
    text = yaml_path.read_text()
    m = re.search(r"^(sample_rate|sampling_rate)\s*:\s*(\d+)\s*$", text, flags=re.M)
    if not m:
        raise CheckpointError(
            f"{yaml_path}: no top-level 'sample_rate:' entry; it is needed to play the audio at the right speed"
        )
    return int(m.group(2))


def load_speechbrain(path: Path, checkpoint: str = "") -> UnitHifigan:
    folder = path if path.is_dir() else path.parent
    yaml_path = folder / "hyperparams.yaml"
    ckpt = folder / (checkpoint or (path.name if path.is_file() else "generator.ckpt"))
    if not ckpt.is_file():
        raise CheckpointError(f"{ckpt}: generator checkpoint not found (set vocoder.checkpoint to its file name)")
    args = read_speechbrain_generator_args(yaml_path)
    arch = UnitHifiganGeneratorArgs.to_arch(args, _speechbrain_sample_rate(yaml_path), str(yaml_path))
    model = UnitHifigan(arch)
    state = _torch_load(ckpt)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{ckpt}: expected a state dict of tensors (torch.save(generator.state_dict()))")
    load_state_strict(model, {f"generator.{k}": v for k, v in state.items()}, str(ckpt))
    return model


# ----------------------------------------------------------------------------- codehifigan
CODEHIFIGAN_UNSUPPORTED = {
    "f0": "F0-conditioned generators need an F0 track",
    "f0_quant_num_bin": "F0-conditioned generators need an F0 track",
    "num_f0_tokens": "F0-token generators need F0 tokens next to the units",
    "num_style_tokens": "time-varying style tokens are not part of the unit stream",
    "embedder_params": "speaker-embedder generators need an external speaker vector",
}


def codehifigan_arch(cfg: dict[str, Any], source: str) -> UnitHifiganArch:
    """:class:`UnitHifiganArch` for a CodeHiFiGAN ``config.json``."""
    for key, why in CODEHIFIGAN_UNSUPPORTED.items():
        if cfg.get(key):
            raise CheckpointError(f"{source}: {key!r} is set: {why}; only unit (+ speaker/style id) vocoders are supported")
    for key in ("upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel",
                "resblock_kernel_sizes", "resblock_dilation_sizes", "num_embeddings", "embedding_dim"):
        if key not in cfg:
            raise CheckpointError(f"{source}: missing key {key!r}; is this a CodeHiFiGAN config.json?")
    emb = int(cfg["embedding_dim"])
    multispkr, multistyle = bool(cfg.get("multispkr")), bool(cfg.get("multistyle"))
    in_dim = int(cfg.get("model_in_dim", 80))
    if in_dim != emb * (1 + multispkr + multistyle):
        raise CheckpointError(
            f"{source}: model_in_dim={in_dim} but embedding_dim={emb} with multispkr={multispkr}, "
            f"multistyle={multistyle} gives {emb * (1 + multispkr + multistyle)}"
        )
    dur = cfg.get("dur_predictor_params") or {}
    return UnitHifiganArch(
        num_units=int(cfg["num_embeddings"]),
        sample_rate=int(cfg.get("sampling_rate", 16000)),
        embedding_dim=emb,
        upsample_initial_channel=int(cfg["upsample_initial_channel"]),
        upsample_factors=[int(u) for u in cfg["upsample_rates"]],
        upsample_kernel_sizes=[int(k) for k in cfg["upsample_kernel_sizes"]],
        resblock_type="1",
        resblock_kernel_sizes=[int(k) for k in cfg["resblock_kernel_sizes"]],
        resblock_dilation_sizes=[[int(d) for d in ds] for ds in cfg["resblock_dilation_sizes"]],
        pooling_type="none",
        duration_predictor="codehifigan" if dur else "",
        var_pred_hidden_dim=int(dur.get("var_pred_hidden_dim", 128)),
        var_pred_kernel_size=int(dur.get("var_pred_kernel_size", 3)),
        var_pred_dropout=float(dur.get("var_pred_dropout", 0.5)),
        num_speakers=int(cfg.get("num_speakers", 200)) if multispkr else 0,
        speaker_dim=emb if multispkr else 0,
        num_styles=int(cfg.get("num_styles", 100)) if multistyle else 0,
        style_dim=emb if multistyle else 0,
        padding_mode="zeros",
    )


def codehifigan_state_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename CodeGenerator keys to :class:`UnitHifigan` keys (weight-norm names fixed later)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "dict.weight":  # ids 0..K-1 -> rows 1..K; row 0 is speechbrain's unused padding id
            out["generator.unit_embedding.weight"] = torch.cat([value.new_zeros(1, value.shape[1]), value])
        elif key == "spkr.weight":
            out["speakers.weight"] = value
        elif key == "style.weight":
            out["styles.weight"] = value
        elif key.startswith("dur_predictor."):
            out["generator.var_predictor." + key[len("dur_predictor."):]] = value
        else:
            m = re.match(r"^(conv_pre|conv_post|ups\.\d+|resblocks\.\d+\.convs[12]?\.\d+)\.(.+)$", key)
            out[f"generator.{m.group(1)}.conv.{m.group(2)}" if m else key] = value
    return out


def _find_codehifigan_checkpoint(folder: Path, checkpoint: str) -> Path:
    if checkpoint:
        return folder / checkpoint
    files = sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix in CODEHIFIGAN_SUFFIXES or re.fullmatch(r"g_\d+", p.name)))
    if len(files) != 1:
        raise CheckpointError(
            f"{folder}: found {[p.name for p in files] or 'no'} checkpoint candidates next to config.json; "
            f"set vocoder.checkpoint to the generator file (or point vocoder.path at it)"
        )
    return files[0]


def load_codehifigan(path: Path, checkpoint: str = "") -> UnitHifigan:
    folder = path if path.is_dir() else path.parent
    ckpt = path if path.is_file() else _find_codehifigan_checkpoint(folder, checkpoint)
    if not ckpt.is_file():
        raise CheckpointError(f"{ckpt}: CodeHiFiGAN checkpoint not found")
    cfg_path = folder / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{cfg_path}: unreadable ({exc})") from None
    arch = codehifigan_arch(cfg, str(cfg_path))
    blob = _torch_load(ckpt)
    if not isinstance(blob, dict) or not isinstance(blob.get("generator"), dict):
        keys = list(blob)[:8] if isinstance(blob, dict) else type(blob).__name__
        raise CheckpointError(f"{ckpt}: expected a dict with a 'generator' state dict (found {keys})")
    state = codehifigan_state_to_ours(blob["generator"])
    if any(".convs." in k for k in state):  # jik876 ResBlock2 layout
        arch.resblock_type = "2"
        arch.resblock_dilation_sizes = [list(d)[:2] for d in arch.resblock_dilation_sizes]
    model = UnitHifigan(arch)
    load_state_strict(model, state, str(ckpt))
    return model
