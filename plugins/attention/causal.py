"""Causal attention: a query sees keys at its own and earlier positions (autoregressive)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffuspeech.attention import AttentionPolicy, apply_padding, check_inputs, position_grid


class CausalAttention(AttentionPolicy):
    @dataclass
    class Config:
        pass

    def mask(self, modality: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        check_inputs(modality, valid)
        q, k = position_grid(valid.shape[1], valid.device)  # [L, 1], [1, L]
        return apply_padding((k <= q)[None], valid)
