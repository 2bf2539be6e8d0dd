"""``margin``: reveal the ``k`` candidates whose top-1 probability beats the top-2 by the most
(margin-based remasking, as in the dLLM literature's top-k margin confidence)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffuspeech.sampler import Sampler, topk_mask


class MarginSampler(Sampler):
    """Top-``num_to_reveal`` by ``p(top-1) - p(top-2)`` per row: a position whose best guess has no
    close second is committed first, even when its top-1 probability is modest."""

    @dataclass
    class Config:
        pass

    needs_stats = ("margin",)

    def select(
        self,
        confidence: torch.Tensor,  # [B, L] float, -inf = not eligible
        num_to_reveal: torch.Tensor,  # [B] long
        generator: torch.Generator | None = None,
        stats: dict[str, torch.Tensor] | None = None,  # margin [B, L]
    ) -> torch.Tensor:
        if stats is None or "margin" not in stats:
            raise ValueError("margin sampler: the engine passes stats['margin'] (needs_stats); got none")
        score = torch.where(torch.isfinite(confidence), stats["margin"].nan_to_num(0.0), float("-inf"))  # [B, L]
        return topk_mask(score, num_to_reveal)  # [B, L] bool
