"""Interface: vocoder (discrete speech units -> waveform), and the input checks every vocoder runs
(:func:`validate_units`, :func:`check_compatible`) before any model work."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Optional

import torch

from .component import Component
from .errors import UserError

__all__ = ["Vocoder", "VocoderCompatibilityError", "VocoderInputError", "check_compatible", "validate_units"]


class VocoderInputError(UserError):
    """Units or lengths a vocoder cannot decode."""


class VocoderCompatibilityError(UserError):
    """A vocoder and a tokenizer that do not agree on units or frame rate."""


def validate_units(
    units: torch.Tensor,  # [B, T] integer ids
    lengths: torch.Tensor | None,  # [B] valid frames per row, or None
    num_units: int,
    min_frames: int = 1,
    who: str = "vocoder",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check ``units``/``lengths``; return ``(units [B, T] long, lengths [B] long)``.

    Only the valid frames of each row (``[:length]``) are range-checked: padding beyond a
    row's length may hold anything (e.g. a mask id).
    """
    if not isinstance(units, torch.Tensor):
        raise VocoderInputError(f"{who}: units must be a torch.Tensor [batch, frames], got {type(units).__name__}")
    if units.dim() == 1:
        raise VocoderInputError(f"{who}: units must be 2-D [batch, frames]; use decode_one() for a single [frames] row")
    if units.dim() != 2:
        raise VocoderInputError(f"{who}: units must be 2-D [batch, frames], got shape {tuple(units.shape)}")
    if units.is_floating_point() or units.is_complex() or units.dtype == torch.bool:
        raise VocoderInputError(f"{who}: units must be an integer tensor (ids), got dtype {units.dtype}")
    batch, frames = units.shape
    if batch == 0 or frames == 0:
        raise VocoderInputError(f"{who}: empty input (units shape {tuple(units.shape)}); nothing to decode")
    units = units.long()
    if lengths is None:
        lengths = torch.full((batch,), frames, dtype=torch.long, device=units.device)
    else:
        lengths = torch.as_tensor(lengths, device=units.device).long().reshape(-1)
        if lengths.numel() != batch:
            raise VocoderInputError(f"{who}: lengths has {lengths.numel()} entries for a batch of {batch} rows")
        if bool((lengths > frames).any()):
            raise VocoderInputError(f"{who}: lengths {lengths.tolist()} exceed the {frames} frames of units")
    short = (lengths < min_frames).nonzero().flatten().tolist()
    if short:
        raise VocoderInputError(
            f"{who}: rows {short} have {[int(lengths[i]) for i in short]} frames; at least {min_frames} "
            f"are needed (empty or too-short unit sequences cannot be decoded)"
        )
    valid = torch.arange(frames, device=units.device)[None, :] < lengths[:, None]  # [B, T]
    bad = valid & ((units < 0) | (units >= num_units))
    if bool(bad.any()):
        row, col = (int(i) for i in bad.nonzero()[0])
        raise VocoderInputError(
            f"{who}: unit id {int(units[row, col])} at row {row}, frame {col} is out of range; this vocoder "
            f"accepts ids in [0, {num_units}). Subtract the vocabulary offset of speech units first, and check "
            f"that the vocoder was trained for this tokenizer's {num_units}-unit codebook"
        )
    return units, lengths


def check_compatible(vocoder: Any, tokenizer: Any, frame_rate_tolerance: float = 1e-3) -> None:
    """Raise :class:`VocoderCompatibilityError` if ``vocoder`` cannot voice ``tokenizer``'s units.

    Checks the unit count and, where both sides declare one and the vocoder does not
    predict durations itself, the frame rate (units per second).
    """
    v_units, t_units = int(vocoder.num_units), int(tokenizer.num_units)
    v_name, t_name = type(vocoder).__name__, type(tokenizer).__name__
    if v_units != t_units:
        raise VocoderCompatibilityError(
            f"vocoder {v_name} decodes {v_units} units but tokenizer {t_name} produces {t_units}: "
            f"use a vocoder checkpoint trained on this tokenizer's units (or train one with `diffuspeech train-vocoder`)"
        )
    v_rate = getattr(vocoder, "frame_rate", None)
    t_rate = getattr(tokenizer, "frame_rate", None)
    if getattr(vocoder, "predicts_durations", False) or v_rate is None or t_rate is None:
        return
    if abs(float(v_rate) - float(t_rate)) > frame_rate_tolerance * max(1.0, float(t_rate)):
        raise VocoderCompatibilityError(
            f"vocoder {v_name} expects {float(v_rate):g} units/s but tokenizer {t_name} produces "
            f"{float(t_rate):g} units/s: the audio would play at the wrong speed; pick a vocoder whose "
            f"sample_rate / hop matches the tokenizer's frame rate"
        )


class Vocoder(Component, ABC):
    """Turns speech units back into audio at ``sample_rate``; accepts ids in [0, num_units).

    ``frame_rate`` is the units per second it expects (samples per unit = sample_rate / frame_rate);
    a model checks it against its tokenizer's when it is built. ``None`` (unknown) skips that check;
    a vocoder that predicts durations itself sets ``predicts_durations = True``."""

    sample_rate: int
    num_units: int
    frame_rate: Optional[float] = None
    predicts_durations: bool = False

    @abstractmethod
    def decode(
        self,
        units: torch.Tensor,  # [batch, frames] long, ids in [0, num_units)
        lengths: torch.Tensor | None = None,  # [batch] valid frames per row; None = all
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(waveform [batch, samples] float, sample_lengths [batch] long)``."""

    def decode_one(self, units: torch.Tensor) -> torch.Tensor:
        """Convenience: ``[frames]`` -> ``[samples]``."""
        wav, lengths = self.decode(units.reshape(1, -1))
        return wav[0, : int(lengths[0])]
