"""Block-causal attention (VocalNet-MDM): bidirectional inside a block, causal across blocks.

The canvas is cut into blocks of ``block_size`` positions (block of position p = p // block_size);
a query in block i sees every key in blocks 0..i.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffuspeech.attention import AttentionPolicy, apply_padding, check_inputs, position_grid


class BlockCausalAttention(AttentionPolicy):
    @dataclass
    class Config:
        block_size: int = 16  # positions per block; VocalNet-MDM uses 16

    def __init__(self, config: BlockCausalAttention.Config | None = None) -> None:
        super().__init__(config)
        self.check_config(self.config, "attention")

    @classmethod
    def check_config(cls, config, path: str) -> None:
        if config.block_size < 1:
            raise ValueError(f"{path}.block_size must be >= 1, got {config.block_size}")

    def mask(self, modality: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        check_inputs(modality, valid)
        q, k = position_grid(valid.shape[1], valid.device)  # [L, 1], [1, L]
        size = self.config.block_size
        return apply_padding((k // size <= q // size)[None], valid)
