"""Interface: vocoder (discrete speech units -> waveform)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from .component import Component


class Vocoder(Component, ABC):
    """Turns speech units back into audio at ``sample_rate``; accepts ids in [0, num_units)."""

    sample_rate: int
    num_units: int

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
