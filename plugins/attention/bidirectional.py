"""Bidirectional attention: every real position sees every real position (LLaDA, DiffuSpeech)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffuspeech.attention import AttentionPolicy, apply_padding, check_inputs


class BidirectionalAttention(AttentionPolicy):
    @dataclass
    class Config:
        pass

    def mask(self, modality: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        check_inputs(modality, valid)
        length = valid.shape[1]
        full = torch.ones(1, length, length, dtype=torch.bool, device=valid.device)  # [1, L, L]
        return apply_padding(full, valid)
