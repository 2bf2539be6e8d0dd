"""i.i.d. token masking: each target token masked with p = gamma_modality(t)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffuspeech.modality import CODE_MODALITY, MODALITY_CODE, SPECIAL
from diffuspeech.noiser import Noiser
from diffuspeech.scheduler import MaskScheduler


class IIDNoiser(Noiser):
    @dataclass
    class Config:
        min_prob: float = 1e-3  # floor on p_mask so 1/p stays bounded

    def __call__(self, target, modality, t, scheduler: MaskScheduler, generator=None):
        p = torch.zeros(target.shape, dtype=torch.float32, device=target.device)  # [B, L]
        t_col = t.to(torch.float32)[:, None].expand_as(p)  # [B, L]
        for code, name in CODE_MODALITY.items():
            if name == SPECIAL:
                continue
            sel = modality == code
            if sel.any():
                p[sel] = scheduler.mask_prob(t_col[sel], name).to(p.device, torch.float32)
        # target end-tokens carry their segment's modality; anything else falls back to text
        other = target & (modality == MODALITY_CODE[SPECIAL])
        if other.any():
            p[other] = scheduler.mask_prob(t_col[other]).to(p.device, torch.float32)
        p = p.clamp(min=float(self.config.min_prob), max=1.0)
        u = torch.rand(p.shape, generator=generator, device=p.device if generator is None else generator.device)
        masked = (u.to(p.device) < p) & target
        return masked, torch.where(target, p, torch.ones_like(p))
