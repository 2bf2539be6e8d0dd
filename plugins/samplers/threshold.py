"""``threshold``: confidence-aware parallel decoding (Fast-dLLM).

Reveal every eligible position whose confidence is at least ``threshold`` (tau), and never
fewer than ``max(1, num_to_reveal)`` per row that has an eligible position, so decoding
always progresses and still finishes within the step budget. With ``factor`` set, the
factor-based rule is used instead of the fixed threshold: sort a row's confidences
``c_1 >= c_2 >= ...`` and reveal the longest prefix with ``c_n >= 1 - factor / (n + 1)``.

Give it many steps (e.g. one per target token): the threshold, not the schedule, then
decides how many tokens each step commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from diffuspeech.sampler import Sampler, topk_mask


class ThresholdSampler(Sampler):
    @dataclass
    class Config:
        threshold: float = 0.9  # tau: reveal every candidate at least this confident
        factor: Optional[float] = None  # if set, Fast-dLLM's factor rule replaces the fixed threshold

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.check_config(self.config, "sampler")

    @classmethod
    def check_config(cls, config, path: str) -> None:
        if not 0.0 <= float(config.threshold) <= 1.0:
            raise ValueError(f"{path}.threshold must be in [0, 1], got {config.threshold}")
        if config.factor is not None and float(config.factor) <= 0:
            raise ValueError(f"{path}.factor must be > 0 (or null for the fixed threshold), got {config.factor}")

    def select(
        self,
        confidence: torch.Tensor,  # [B, L] float, -inf = not eligible
        num_to_reveal: torch.Tensor,  # [B] long
        generator: torch.Generator | None = None,
        stats: dict[str, torch.Tensor] | None = None,  # unused: this strategy reads the confidence only
    ) -> torch.Tensor:
        if self.config.factor is None:
            confident = (confidence >= float(self.config.threshold)).sum(dim=1)  # [B]
        else:
            values = torch.sort(confidence, dim=1, descending=True).values  # [B, L]
            n = torch.arange(1, confidence.shape[1] + 1, device=confidence.device)  # [L]
            passes = values >= 1.0 - float(self.config.factor) / (n[None, :] + 1)  # [B, L]
            confident = torch.cumprod(passes.long(), dim=1).sum(dim=1)  # [B] longest passing prefix
        k = torch.maximum(torch.maximum(confident, num_to_reveal), torch.ones_like(num_to_reveal))  # [B]
        return topk_mask(confidence, k)  # [B, L] bool; rows with no eligible position reveal none
