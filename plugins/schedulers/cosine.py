"""Cosine schedule: gamma(t) = cos(pi/2 * (1 - t)) (MaskGIT / DiffuSpeech)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffuspeech.modality import TEXT
from diffuspeech.scheduler import MaskScheduler


class CosineSchedule(MaskScheduler):
    @dataclass
    class Config:
        pass

    def mask_prob(self, t: torch.Tensor, modality: str = TEXT) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float32)
        return torch.cos(0.5 * math.pi * (1.0 - t)).clamp(0.0, 1.0)
