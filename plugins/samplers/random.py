"""``random``: reveal ``k`` eligible positions chosen uniformly at random (LLaDA's ``random`` remasking)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffuspeech.sampler import Sampler, topk_mask


class RandomSampler(Sampler):
    """Ignores the confidence values: every eligible position is equally likely."""

    @dataclass
    class Config:
        pass

    def select(
        self,
        confidence: torch.Tensor,  # [B, L] float, -inf = not eligible
        num_to_reveal: torch.Tensor,  # [B] long
        generator: torch.Generator | None = None,
        stats: dict[str, torch.Tensor] | None = None,  # unused: this strategy reads the confidence only
    ) -> torch.Tensor:
        noise = torch.rand(confidence.shape, device=confidence.device, generator=generator)  # [B, L]
        scores = torch.where(torch.isfinite(confidence), noise, float("-inf"))
        return topk_mask(scores, num_to_reveal)  # [B, L] bool
