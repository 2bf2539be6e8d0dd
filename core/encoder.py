"""Interface: speech encoder (waveform -> continuous features, per layer), for systems that hear
through embeddings rather than discrete units (DIFFA: a frozen Whisper encoder + adapters).

    encoder:
      name: whisper           # a registered encoder: whisper | mel | a plugin's
      path: whisper-small/    # ...the settings of that encoder's Config

An encoder returns every layer's features (:class:`EncoderOutput`: index 0 is the input
embedding, the last is the final layer, as ``transformers`` counts ``hidden_states``) so that
adapters choose the layers they tap. It is frozen unless its config says ``trainable: true``.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from .component import Component
from .errors import UserError

__all__ = ["EncoderOutput", "EncoderInputError", "SpeechEncoder"]


class EncoderInputError(UserError, ValueError):
    """Audio the encoder cannot take (too long for its window, empty); the message names the fix."""


@dataclass
class EncoderOutput:
    hidden: list[torch.Tensor]  # per layer [B, T, feature_size]; 0 = input embedding, -1 = final layer
    lengths: torch.Tensor  # [B] long, valid frames per row (frames past it are padding)

    @property
    def num_layers(self) -> int:
        return len(self.hidden)

    def layer(self, index: int, where: str = "layers") -> torch.Tensor:
        """``[B, T, D]`` features of one layer (negative indices count from the last)."""
        n = len(self.hidden)
        if not -n <= index < n:
            raise ValueError(f"{where}: layer {index} does not exist; the encoder returns layers 0..{n - 1} (or -1 for the last)")
        return self.hidden[index]


class SpeechEncoder(nn.Module, Component):
    """Waveform ``[B, S]`` at :attr:`sample_rate` -> :class:`EncoderOutput` at :attr:`frame_rate`."""

    window_hint = "cut the clip, or use an encoder with a longer window"  # the fix the too-long message names

    def __init__(self, config: Any = None) -> None:
        nn.Module.__init__(self)
        Component.__init__(self, config)

    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Hz of the waveform the encoder takes."""

    @property
    @abstractmethod
    def frame_rate(self) -> float:
        """Feature frames per second."""

    @property
    @abstractmethod
    def feature_size(self) -> int:
        """Width D of every layer's features."""

    @property
    @abstractmethod
    def num_layers(self) -> int:
        """How many entries :attr:`EncoderOutput.hidden` has."""

    @property
    def max_samples(self) -> Optional[int]:
        """Longest waveform the encoder takes (its window), or None for no limit."""
        return None

    @property
    def trainable(self) -> bool:
        """Whether the encoder's own parameters may be trained (default: frozen)."""
        return bool(getattr(self.config, "trainable", False))

    @abstractmethod
    def output_lengths(self, num_samples: torch.Tensor) -> torch.Tensor:
        """``[B]`` feature frames for waveforms of ``num_samples [B]`` samples."""

    @abstractmethod
    def forward(
        self,
        waveform: torch.Tensor,  # [B, S] float, right-padded with zeros
        lengths: torch.Tensor,  # [B] long, valid samples per row
    ) -> EncoderOutput:
        """Features of every layer, ``[B, T, D]`` each, ``T = output_lengths(lengths).max()``."""

    def check_audio(self, num_samples: int, where: str) -> None:
        """Raise :class:`EncoderInputError` naming ``where`` when a clip of ``num_samples`` cannot be encoded."""
        if num_samples <= 0:
            raise EncoderInputError(f"{where}: the audio is empty")
        limit = self.max_samples
        if limit is not None and num_samples > limit:
            raise EncoderInputError(
                f"{where}: {num_samples / self.sample_rate:.2f} s of audio is longer than the encoder's "
                f"{limit / self.sample_rate:.2f} s window; {self.window_hint}"
            )
