"""Interface: adapter (encoder features -> embeddings in the backbone's input space).

    adapters:                 # a mapping: your name for each adapter -> its component node
      acoustic: {name: qformer, layers: [2, 5, 8, 11], num_queries: 64}
      semantic: {name: semantic, layers: [-1], prompt_tokens: 20}

The adapters' outputs are concatenated in the mapping's order and take the place of a
``modality: speech_features`` segment on the canvas (see ``diffuspeech.speech_features``).
``input_size`` and ``output_size`` default to the encoder's feature width and the backbone's
hidden size: the model fills them in when it is composed, and names both keys when a given
value does not fit. Drop an adapter with ``adapters.acoustic=null``.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import nn

from .component import Component
from .encoder import EncoderOutput

__all__ = ["Adapter"]


class Adapter(nn.Module, Component):
    """:class:`~diffuspeech.encoder.EncoderOutput` -> ``(embeddings [B, T', output_size], lengths [B])``.

    ``Config`` must have ``input_size``, ``output_size`` (Optional[int], filled when composed) and
    ``layers`` (the encoder layers it reads)."""

    def __init__(self, config: Any = None) -> None:
        nn.Module.__init__(self)
        Component.__init__(self, config)

    @property
    def input_size(self) -> int:
        return int(self.config.input_size)

    @property
    def output_size(self) -> int:
        return int(self.config.output_size)

    @property
    def layers(self) -> list[int]:
        return [int(i) for i in self.config.layers]

    @abstractmethod
    def output_lengths(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B]`` embeddings produced for ``frames [B]`` encoder frames."""

    @abstractmethod
    def forward(self, features: EncoderOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embeddings [B, T', output_size], lengths [B])``; rows past their length are padding."""
