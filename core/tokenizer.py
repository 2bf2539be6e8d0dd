"""Interface: speech tokenizer (waveform -> discrete units)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from .component import Component


class SpeechTokenizer(Component, ABC):
    """Turns audio into discrete speech units.

    Implementations set ``sample_rate`` (Hz of the waveform ``encode`` expects),
    ``frame_rate`` (units per second) and ``num_units`` (units are ids in [0, num_units)).
    """

    sample_rate: int
    frame_rate: float
    num_units: int

    @abstractmethod
    def encode(
        self,
        waveform: torch.Tensor,  # [batch, samples] float, at self.sample_rate, mono
        lengths: torch.Tensor | None = None,  # [batch] valid samples per row; None = all
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(units [batch, frames] long, unit_lengths [batch] long)``.

        Padding frames beyond ``unit_lengths`` hold arbitrary ids and must be ignored.
        """

    def encode_one(self, waveform: torch.Tensor) -> torch.Tensor:
        """Convenience: ``[samples]`` -> ``[frames]`` units."""
        units, lengths = self.encode(waveform.reshape(1, -1))
        return units[0, : int(lengths[0])]
