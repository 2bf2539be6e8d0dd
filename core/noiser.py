"""Interface: noiser (which target tokens to mask during training, and with what probability).

The default ``iid`` masks each target token independently with its modality's schedule
probability at time t (LLaDA / DiffuSpeech). Block-wise (VocalNet-MDM) and span masking
(TtT) are other noisers: same inputs, same outputs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from .component import Component
from .scheduler import MaskScheduler


class Noiser(Component, ABC):
    @abstractmethod
    def __call__(
        self,
        target: torch.Tensor,  # [batch, length] bool: positions that may be masked
        modality: torch.Tensor,  # [batch, length] long modality codes
        t: torch.Tensor,  # [batch] float diffusion time in (0, 1]
        scheduler: MaskScheduler,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(masked [batch, length] bool, p_mask [batch, length] float)``.

        ``masked`` is a subset of ``target``; ``p_mask`` is the probability with which each
        masked position was masked (the loss divides by it); it must be > 0 where masked.
        """
