"""Linear schedule: gamma(t) = t (LLaDA's forward process)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffuspeech.modality import TEXT
from diffuspeech.scheduler import MaskScheduler


class LinearSchedule(MaskScheduler):
    @dataclass
    class Config:
        pass

    def mask_prob(self, t: torch.Tensor, modality: str = TEXT) -> torch.Tensor:
        return torch.as_tensor(t, dtype=torch.float32).clamp(0.0, 1.0)
