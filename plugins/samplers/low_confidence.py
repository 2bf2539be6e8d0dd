"""``low_confidence``: reveal the ``k`` most confident candidates (LLaDA's remasking)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffuspeech.sampler import Sampler, topk_mask


class LowConfidenceSampler(Sampler):
    """Top-``num_to_reveal`` by confidence per row; the rest stay masked ("low confidence
    remasking"). With ``temperature: 0`` and the even split schedule this is LLaDA's sampler."""

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
        return topk_mask(confidence, num_to_reveal)  # [B, L] bool
