"""``entropy``: reveal the ``k`` candidates whose predictive distribution is the most certain
(lowest entropy over the ids the position may take; Dream's entropy remasking)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffuspeech.sampler import Sampler, topk_mask


class EntropySampler(Sampler):
    """Top-``num_to_reveal`` by ``-entropy`` per row: the whole distribution's certainty decides,
    not just the chosen id's probability."""

    @dataclass
    class Config:
        pass

    needs_stats = ("entropy",)

    def select(
        self,
        confidence: torch.Tensor,  # [B, L] float, -inf = not eligible
        num_to_reveal: torch.Tensor,  # [B] long
        generator: torch.Generator | None = None,
        stats: dict[str, torch.Tensor] | None = None,  # entropy [B, L]
    ) -> torch.Tensor:
        if stats is None or "entropy" not in stats:
            raise ValueError("entropy sampler: the engine passes stats['entropy'] (needs_stats); got none")
        score = torch.where(torch.isfinite(confidence), -stats["entropy"].nan_to_num(float("inf")), float("-inf"))  # [B, L]
        return topk_mask(score, num_to_reveal)  # [B, L] bool
