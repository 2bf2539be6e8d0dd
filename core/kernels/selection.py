"""Batched top-k with a different ``k`` per row, without a Python loop or a host sync."""

from __future__ import annotations

import torch


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
