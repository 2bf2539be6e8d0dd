"""Atomic training checkpoints: a crash or kill at any moment never corrupts a run.

Layout under the run folder::

    checkpoints/
      latest.json                    {"dir": "step_00000120", "global_step": 120}
      step_00000120/
        model.safetensors            full weights, keys "<section>.<param>" (SpeechDiffusionModel.state_dict)
        optimizer.safetensors        AdamW moments per parameter: "state/<param>/<name>"
        rng.safetensors              torch CPU (+ CUDA) generator states, numpy's MT19937 key
        trainer.json                 stage, step, data position, optimizer param groups, python RNG (written last)

A checkpoint is written into ``checkpoints/.tmp-*`` (every file fsynced), renamed into place
with one ``os.replace`` and only then published in ``latest.json`` (itself a temp file +
``os.replace``). A kill leaves at worst a ``.tmp-*`` folder, removed on the next start;
resuming reads the last published checkpoint. No pickle anywhere: tensors are safetensors,
the rest is JSON.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..atomic import TMP_PREFIX, atomic_folder, write_json_atomic
from ..errors import UserError

CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
FORMAT = "diffuspeech-train-checkpoint/1"


@dataclass
class TrainState:
    stage: int = 0  # index into train.stages
    step: int = 0  # optimizer steps done in this stage
    global_step: int = 0  # optimizer steps done in the whole run
    data: dict[str, Any] = field(default_factory=dict)  # MixtureBatcher.state_dict() of this stage
    stage_done: bool = False  # the stage finished (its model was saved)


@dataclass
class Checkpoint:
    path: Path
    state: TrainState
    model: dict[str, torch.Tensor]
    optimizer: Optional[dict[str, Any]]  # torch.distributed.checkpoint "full" optimizer state dict, or None
    rng: dict[str, Any]


# ---------------------------------------------------------------------------- low-level writes


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """safetensors file, fsynced (the single place tensors are written: tests patch it to simulate a kill)."""
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    except Exception as exc:  # noqa: BLE001 - safetensors reports a full disk as its own error type
        if "No space left" in str(exc):
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from None
        raise
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------- optimizer / rng <-> tensors


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for name, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{name}/{key}"] = value
            else:
                scalars.setdefault(name, {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"scalars": scalars, "param_groups": groups}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, rest = key.split("/", 1)
        name, _, sub = rest.rpartition("/")
        state.setdefault(name, {})[sub] = value
    for name, values in meta["scalars"].items():
        state.setdefault(name, {}).update(values)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Process-global RNG states (the trainer draws from explicit generators; these are saved too)."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = s
    np_state = np.random.get_state()
    tensors["numpy_key"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    py = random.getstate()
    meta = {"python": [py[0], list(py[1]), py[2]], "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("cuda_"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["numpy_key"].numpy().astype(np.uint32), pos, has_gauss, cached))


# ---------------------------------------------------------------------------- save / find / load


def save_checkpoint(
    run_dir: str | Path,
    state: TrainState,
    model_state: dict[str, torch.Tensor],
    optimizer_state: Optional[dict[str, Any]],
    keep: int = 2,
) -> Path:
    """Write ``checkpoints/step_<global_step>`` atomically, publish it, prune old ones."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{state.global_step:08d}"
    final = root / name  # re-saving the same step (e.g. after resuming a finished stage) replaces it
    with atomic_folder(final) as tmp:
        _write_tensors(tmp / "model.safetensors", model_state, {"format": FORMAT})
        meta: dict[str, Any] = {"format": FORMAT, "state": asdict(state)}
        if optimizer_state is not None:
            opt_tensors, meta["optimizer"] = _flatten_optimizer(optimizer_state)
            _write_tensors(tmp / "optimizer.safetensors", opt_tensors)
        rng_tensors, meta["rng"] = capture_rng()
        _write_tensors(tmp / "rng.safetensors", rng_tensors)
        _write_json(tmp / "trainer.json", meta)  # last: its presence marks a complete checkpoint
    write_json_atomic(root / LATEST, {"dir": name, "global_step": state.global_step})
    for old in sorted(complete_checkpoints(root))[:-keep] if keep > 0 else []:
        shutil.rmtree(root / old, ignore_errors=True)
    return final


def complete_checkpoints(root: Path) -> list[str]:
    return [p.name for p in root.glob("step_*") if (p / "trainer.json").is_file()]


def clean_partial(run_dir: str | Path) -> list[str]:
    """Remove ``.tmp-*`` leftovers of an interrupted write; returns their names."""
    root = Path(run_dir) / CHECKPOINTS
    gone = [p.name for p in root.glob(f"{TMP_PREFIX}*")] if root.is_dir() else []
    for name in gone:
        shutil.rmtree(root / name, ignore_errors=True)
    return gone


def latest_checkpoint(run_dir: str | Path) -> Optional[Path]:
    """The last published checkpoint (``latest.json``), else the newest complete one, else None."""
    candidates = checkpoint_candidates(run_dir)
    return candidates[0] if candidates else None


def checkpoint_candidates(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints, the published one (``latest.json``) first, then newest to oldest."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    names = sorted(complete_checkpoints(root), reverse=True)
    try:
        published = json.loads((root / LATEST).read_text())["dir"]
        if published in names:
            names.remove(published)
            names.insert(0, published)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return [root / n for n in names]


def load_latest_valid(run_dir: str | Path) -> tuple[Optional[Checkpoint], list[str]]:
    """The newest checkpoint that loads completely, and ``"<name>: <why>"`` for each newer one skipped."""
    skipped = []
    for path in checkpoint_candidates(run_dir):
        try:
            return load_checkpoint(path), skipped
        except CheckpointError as exc:
            skipped.append(f"{path.name}: {exc}")
    return None, skipped


class CheckpointError(UserError):
    """A training checkpoint that cannot be loaded; the message names the file and what is wrong."""


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read every file of a checkpoint; anything missing, truncated or malformed is a :class:`CheckpointError`."""
    path = Path(path)
    meta_path = path / "trainer.json"
    if not meta_path.is_file():
        raise CheckpointError(f"{path}: not a complete training checkpoint (no trainer.json)")
    try:
        meta = json.loads(meta_path.read_text())
        state = TrainState(**meta["state"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable ({type(exc).__name__}: {exc})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {meta.get('format')!r}; expected {FORMAT!r}")

    def tensors(name: str) -> dict[str, torch.Tensor]:
        try:
            return load_file(str(path / name))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for broken files
            raise CheckpointError(f"{path / name}: unreadable ({exc})") from None

    optimizer = None
    if "optimizer" in meta:
        try:
            optimizer = _unflatten_optimizer(tensors("optimizer.safetensors"), meta["optimizer"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path / 'optimizer.safetensors'}: does not match trainer.json ({exc})") from None
    if "rng" not in meta:
        raise CheckpointError(f"{meta_path}: no random-number state (rng); the checkpoint is incomplete")
    return Checkpoint(path=path, state=state, model=tensors("model.safetensors"), optimizer=optimizer,
                      rng={"tensors": tensors("rng.safetensors"), "meta": meta["rng"]})
