"""Interface: masking schedule.

``gamma(t)`` is the probability that a target token is masked at diffusion time ``t`` in
[0, 1] (t = 1: everything masked, t = 0: clean). Training masks each target token with
``mask_prob(t, modality)``; sampling walks t from 1 to 0 and reveals tokens so the masked
fraction follows the same curve (``reveal_counts``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from .component import Component
from .modality import TEXT


class MaskScheduler(Component, ABC):
    """Small uniform surface, in the spirit of diffusers schedulers."""

    @abstractmethod
    def mask_prob(self, t: torch.Tensor, modality: str = TEXT) -> torch.Tensor:
        """Mask probability at time ``t`` (any shape, values in [0, 1]) for ``modality``."""

    def timesteps(self, num_steps: int, device: torch.device | str | None = None) -> torch.Tensor:
        """``[num_steps + 1]`` times from 1 down to 0, evenly spaced."""
        if num_steps <= 0:
            raise ValueError(f"num_steps must be a positive integer, got {num_steps}")
        return torch.linspace(1.0, 0.0, num_steps + 1, device=device)

    def reveal_counts(
        self,
        num_masked: torch.Tensor,  # [batch] long: masked tokens of this modality at the start
        num_steps: int,
        modality: str = TEXT,
    ) -> torch.Tensor:
        """``[batch, num_steps]`` long: how many tokens to reveal at each step.

        After step ``s`` about ``num_masked * gamma(t_{s+1})`` tokens stay masked; the rows
        sum to ``num_masked`` exactly (the last step reveals the rest).
        """
        if num_steps <= 0:
            raise ValueError(f"num_steps must be a positive integer, got {num_steps}")
        t = self.timesteps(num_steps, device=num_masked.device)  # [S+1]
        frac = self.mask_prob(t, modality).clamp(0.0, 1.0).to(torch.float64)  # [S+1]
        frac = torch.cummin(frac, dim=0).values  # never re-mask: monotone non-increasing
        frac[0], frac[-1] = 1.0, 0.0
        remaining = torch.round(num_masked[:, None].to(torch.float64) * frac[None, :]).long()  # [B, S+1]
        return remaining[:, :-1] - remaining[:, 1:]  # [B, S]
