"""Interface: decoding strategy (which masked positions to reveal at a step).

The generation engine (``diffuspeech.generation``) runs the backbone, samples a candidate
id and its confidence at every still-masked position, and asks the strategy which of
them to commit. Strategies see only tensors, so they are easy to test and to swap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from .component import Component


class Sampler(Component, ABC):
    @abstractmethod
    def select(
        self,
        confidence: torch.Tensor,  # [batch, length] float; -inf where a position may not be revealed now
        num_to_reveal: torch.Tensor,  # [batch] long: the schedule's count for this step
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Return ``[batch, length]`` bool: positions to reveal at this step.

        Never selects a position whose confidence is -inf. A strategy may reveal more or
        fewer than ``num_to_reveal`` (threshold decoding does) but must reveal at least one
        eligible position per row that has any, so decoding always makes progress.
        """
