"""Interface: decoding strategy (which masked positions to reveal at a step).

The generation engine (``diffuspeech.sampling``) runs the backbone, samples a candidate
id and its confidence at every still-masked position, and asks the strategy which of
them to commit. Strategies see only tensors, so they are easy to test and to swap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from .component import Component

__all__ = ["STATS", "Sampler", "topk_mask"]


STATS = ("margin", "entropy")  # what the engine can give a strategy besides the top-1 confidence


class Sampler(Component, ABC):
    """``needs_stats``: names from :data:`STATS` the strategy reads; the engine then computes them in
    the same pass as the candidates and calls ``select(..., stats={name: [batch, length] float})``
    (``margin``: top-1 minus top-2 probability; ``entropy``: of the position's softmax, in nats;
    both over the ids the position may take, NaN where it may not be revealed now)."""

    needs_stats: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def select(
        self,
        confidence: torch.Tensor,  # [batch, length] float; -inf where a position may not be revealed now
        num_to_reveal: torch.Tensor,  # [batch] long: the schedule's count for this step
        generator: torch.Generator | None = None,
        stats: dict[str, torch.Tensor] | None = None,  # [batch, length] each, the needs_stats the engine computed
    ) -> torch.Tensor:
        """Return ``[batch, length]`` bool: positions to reveal at this step.

        Never selects a position whose confidence is -inf. A strategy may reveal more or
        fewer than ``num_to_reveal`` (threshold decoding does) but must reveal at least one
        eligible position in every row that has any and asks for ``num_to_reveal >= 1``, so
        decoding always makes progress (``diffuspeech.testing`` checks this).
        """


def topk_mask(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` bool: the ``k[b]`` highest finite ``scores`` of each row ``b``.

    ``scores`` is ``[B, L]`` float where ``-inf`` (or NaN) marks a position that may not be
    chosen; ``k`` is ``[B]`` long. A row with fewer finite scores than ``k`` gets all of
    them. One sort per call, a rank mask and a scatter: no ``.item()``, so the selection
    can run inside a captured CUDA graph.
    """
    if scores.dim() != 2 or k.shape != scores.shape[:1]:
        raise ValueError(f"topk_mask expects scores [B, L] and k [B], got {tuple(scores.shape)} and {tuple(k.shape)}")
    order = torch.sort(scores, dim=1, descending=True)  # values/indices [B, L]
    ranks = torch.arange(scores.shape[1], device=scores.device)  # [L]
    keep = (ranks[None, :] < k[:, None]) & torch.isfinite(order.values)  # [B, L], sorted order
    return torch.zeros_like(keep).scatter(1, order.indices, keep)  # back to canvas order
