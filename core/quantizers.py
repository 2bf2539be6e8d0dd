"""Quantizers: continuous frame features ``[B, T, D]`` -> unit ids ``[B, T]``.

Two formats are read, neither of which runs code when loaded:

* k-means centroids, safetensors: tensor ``centroids`` float32 ``[K, D]`` and string metadata
  ``kind`` (``"kmeans"`` for model features, ``"mel_kmeans"`` for log-mel) and ``num_units``.
  Optional tensors ``feature_mean`` / ``feature_std`` ``[D]``: assignment then happens in the
  standardised space the centroids were fitted in; ``centroids`` itself stays in raw feature
  space (the ``griffinlim`` vocoder reads mel centroids as mean log-mel frames).
* SpiritLM linear quantizer, a torch checkpoint ``{model_cfg: {vocab_size, dim, upstream_dim},
  model_weight}`` loaded with ``torch.load(weights_only=True)``: a 3-layer MLP with
  ``vocab_size + 1`` outputs (the last one is the CTC blank); blank frames take the unit of
  their left neighbour.

Write centroids with :func:`save_centroids`; convert scikit-learn pickles with
``diffuspeech convert-quantizer``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from diffuspeech.kmeans import nearest_centroid

from .atomic import save_tensors
from .errors import UserError

__all__ = [
    "KMeansQuantizer",
    "LinearQuantizer",
    "QuantizerError",
    "dedup_units",
    "load_centroids",
    "load_quantizer",
    "save_centroids",
]


class QuantizerError(UserError):
    """A quantizer file that cannot be used; the message names the file and the fix."""


def save_centroids(
    path: str | os.PathLike,
    centroids: torch.Tensor,
    kind: str,
    metadata: dict[str, str] | None = None,
    extra: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``centroids [K, D]`` (+ ``extra`` tensors) as safetensors, atomically."""
    p = Path(path)
    if centroids.dim() != 2:
        raise QuantizerError(f"{p}: centroids must have shape [K, D], got {tuple(centroids.shape)}")
    tensors = {"centroids": centroids.detach().to("cpu", torch.float32).contiguous()}
    for key, value in (extra or {}).items():
        tensors[key] = value.detach().to("cpu", torch.float32).contiguous()
    meta = {"kind": kind, "num_units": str(int(centroids.shape[0]))}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    save_tensors(tensors, str(tmp), metadata=meta)
    os.replace(tmp, p)
    return p


def load_centroids(path: str | os.PathLike) -> tuple[torch.Tensor, dict[str, str], dict[str, torch.Tensor]]:
    """Read a centroids file: ``(centroids [K, D] float32, metadata, other tensors)``."""
    p = Path(path)
    if not p.is_file():
        raise QuantizerError(f"{p}: quantizer file not found")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types
        raise QuantizerError(
            f"{p}: not a safetensors centroids file ({exc}); fit one with `diffuspeech fit-quantizer` "
            f"or convert a scikit-learn pickle with `diffuspeech convert-quantizer`"
        ) from None
    if "centroids" not in tensors:
        raise QuantizerError(f"{p}: no tensor named 'centroids' (found: {', '.join(sorted(tensors)) or 'none'})")
    centroids = tensors.pop("centroids").float()
    if centroids.dim() != 2 or centroids.shape[0] < 1:
        raise QuantizerError(f"{p}: 'centroids' must have shape [K, D], got {tuple(centroids.shape)}")
    if not bool(torch.isfinite(centroids).all()):
        raise QuantizerError(f"{p}: 'centroids' contains NaN or infinite values")
    declared = meta.get("num_units")
    if declared is not None and declared != str(centroids.shape[0]):
        raise QuantizerError(f"{p}: metadata num_units={declared} but 'centroids' has {centroids.shape[0]} rows")
    return centroids, meta, tensors


class KMeansQuantizer(nn.Module):
    """Nearest centroid (squared Euclidean), batched, on the module's device."""

    def __init__(
        self,
        centroids: torch.Tensor,  # [K, D] in raw feature space
        feature_mean: torch.Tensor | None = None,  # [D]
        feature_std: torch.Tensor | None = None,  # [D]
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        dim = centroids.shape[1]
        mean = torch.zeros(dim) if feature_mean is None else feature_mean.float().reshape(dim)
        std = torch.ones(dim) if feature_std is None else feature_std.float().reshape(dim).clamp_min(1e-8)
        self.register_buffer("centroids", centroids.float())  # [K, D]
        self.register_buffer("mean", mean)  # [D]
        self.register_buffer("std", std)  # [D]
        self.register_buffer("scaled", (centroids.float() - mean) / std)  # [K, D]
        self.metadata = dict(metadata or {})
        self.assignable = int(centroids.shape[0])  # frames are quantised onto centroids [0, assignable)

    @property
    def num_units(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> KMeansQuantizer:
        centroids, meta, extra = load_centroids(path)
        mean, std = extra.get("feature_mean"), extra.get("feature_std")
        for name, t in (("feature_mean", mean), ("feature_std", std)):
            if t is not None and t.numel() != centroids.shape[1]:
                raise QuantizerError(f"{path}: '{name}' has {t.numel()} values, expected {centroids.shape[1]}")
        return cls(centroids, mean, std, meta)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[..., D]`` -> ``[...]`` long unit ids."""
        x = (features.to(self.scaled.dtype) - self.mean) / self.std  # [..., D]
        return nearest_centroid(x, self.scaled[: self.assignable])


def _replace_blanks(codes: torch.Tensor, logits: torch.Tensor, blank: int) -> torch.Tensor:
    """Blank frames take the last non-blank unit to their left; leading blanks (no left
    neighbour) take their own best non-blank unit. ``codes [B, T]``, ``logits [B, T, V+1]``."""
    t = torch.arange(codes.shape[1], device=codes.device).expand_as(codes)  # [B, T]
    is_unit = codes != blank
    last_unit = torch.where(is_unit, t, torch.full_like(t, -1)).cummax(dim=1).values  # [B, T]
    fallback = logits[..., :blank].argmax(-1)  # [B, T] best non-blank unit per frame
    filled = codes.gather(1, last_unit.clamp_min(0))  # [B, T]
    return torch.where(last_unit >= 0, filled, fallback)


class LinearQuantizer(nn.Module):
    """SpiritLM linear quantizer: MLP (Linear, LeakyReLU, Linear, LeakyReLU, Linear) + CTC blank."""

    def __init__(self, encoder: nn.Sequential, vocab_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.vocab_size = vocab_size  # output index vocab_size is the blank

    @property
    def num_units(self) -> int:
        return self.vocab_size

    @property
    def dim(self) -> int:
        return int(self.encoder[0].in_features)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> LinearQuantizer:
        p = Path(path)
        if not p.is_file():
            raise QuantizerError(f"{p}: quantizer file not found")
        try:
            ckpt = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise QuantizerError(
                f"{p}: cannot be read as a weights-only torch checkpoint ({type(exc).__name__}); a SpiritLM "
                f"linear quantizer is {{model_cfg, model_weight}}; for scikit-learn k-means pickles use "
                f"`diffuspeech convert-quantizer --trust-pickle`"
            ) from None
        if not isinstance(ckpt, dict) or "model_cfg" not in ckpt or "model_weight" not in ckpt:
            keys = ", ".join(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
            raise QuantizerError(f"{p}: not a SpiritLM linear quantizer: expected keys model_cfg and model_weight, found {keys}")
        cfg, weights = ckpt["model_cfg"], ckpt["model_weight"]
        try:
            vocab_size = int(cfg["vocab_size"])
            shapes = [tuple(weights[f"{i}.weight"].shape) for i in (0, 2, 4)]
        except (KeyError, TypeError) as exc:
            raise QuantizerError(f"{p}: malformed linear quantizer checkpoint (missing {exc})") from None
        (h1, dim), (h2, h1b), (out, h2b) = shapes
        if h1b != h1 or h2b != h2 or out != vocab_size + 1 or ("dim" in cfg and int(cfg["dim"]) != dim):
            raise QuantizerError(
                f"{p}: layer shapes {shapes} do not form a {cfg.get('dim', '?')} -> ... -> vocab_size+1="
                f"{vocab_size + 1} MLP"
            )
        encoder = nn.Sequential(nn.Linear(dim, h1), nn.LeakyReLU(), nn.Linear(h1, h2), nn.LeakyReLU(), nn.Linear(h2, out))
        try:
            encoder.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise QuantizerError(f"{p}: weights do not fit the linear quantizer: {exc}") from None
        return cls(encoder.eval(), vocab_size)

    @torch.no_grad()
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, T, D]`` -> ``[B, T]`` long unit ids in ``[0, vocab_size)``."""
        squeeze = features.dim() == 2
        x = features[None] if squeeze else features
        first = self.encoder[0]
        logits = self.encoder(x.to(first.weight.dtype))  # [B, T, V+1]
        codes = _replace_blanks(logits.argmax(-1), logits, self.vocab_size)
        return codes[0] if squeeze else codes


def load_quantizer(path: str | os.PathLike, kind: str = "auto") -> KMeansQuantizer | LinearQuantizer:
    """Load ``kind`` = ``"kmeans"`` (safetensors), ``"linear"`` (SpiritLM) or ``"auto"`` (by content)."""
    p = Path(path)
    if kind not in ("auto", "kmeans", "linear"):
        raise QuantizerError(f"unknown quantizer kind {kind!r}; valid: auto, kmeans, linear")
    if kind == "auto":
        if not p.is_file():
            raise QuantizerError(f"{p}: quantizer file not found")
        with open(p, "rb") as f:
            head = f.read(9)
        # safetensors: 8-byte little-endian header size, then a JSON header starting with '{'
        kind = "kmeans" if len(head) == 9 and head[8:9] == b"{" else "linear"
    return KMeansQuantizer.from_file(p) if kind == "kmeans" else LinearQuantizer.from_file(p)


def dedup_units(units: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge runs of repeated units: ``(units [B, T], lengths [B])`` ->
    ``(units [B, T'], durations [B, T'] frames per unit, lengths [B])``; padding holds 0."""
    rows, durs = [], []
    for row, n in zip(units, lengths.tolist()):
        u, d = torch.unique_consecutive(row[:n], return_counts=True)
        rows.append(u)
        durs.append(d)
    new_lengths = torch.tensor([r.numel() for r in rows], dtype=torch.long)
    width = int(new_lengths.max()) if rows else 0
    out = torch.zeros(len(rows), width, dtype=torch.long, device=units.device)
    dur = torch.zeros(len(rows), width, dtype=torch.long, device=units.device)
    for i, (u, d) in enumerate(zip(rows, durs)):
        out[i, : u.numel()] = u
        dur[i, : d.numel()] = d
    return out, dur, new_lengths

