"""Block-causal attention (VocalNet-MDM): bidirectional inside a block, causal across blocks.

``align: canvas`` cuts the whole canvas into blocks of ``block_size`` positions (the block of
position p is p // block_size); a query in block i sees every key in blocks 0..i.

``align: target`` counts blocks over the *target* positions only, in reading order (the k-th target
position is in block k // block_size), as the diffusion engine's semi-autoregressive blocks do with
``block_length = block_size``: every condition position is visible to every query, a condition
query sees conditions only, and a target query sees the target blocks up to its own. Keys before a
decode block then never depend on it or on later blocks, so the ``prefix`` and ``dual`` KV caches
are exact under this policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffuspeech.attention import AttentionPolicy, apply_padding, check_inputs, position_grid

ALIGNS = ("canvas", "target")


class BlockCausalAttention(AttentionPolicy):
    @dataclass
    class Config:
        block_size: int = 16  # positions per block; VocalNet-MDM uses 16
        align: str = "canvas"  # "canvas": blocks from position 0 | "target": blocks over the targets, conditions always visible

    def __init__(self, config: BlockCausalAttention.Config | None = None) -> None:
        super().__init__(config)
        self.check_config(self.config, "attention")
        self.needs_target = self.config.align == "target"

    @classmethod
    def check_config(cls, config, path: str) -> None:
        if config.block_size < 1:
            raise ValueError(f"{path}.block_size must be >= 1, got {config.block_size}")
        if config.align not in ALIGNS:
            raise ValueError(f"{path}.align: {config.align!r}; valid: {', '.join(ALIGNS)}")

    def mask(self, modality: torch.Tensor, valid: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        check_inputs(modality, valid)
        size = self.config.block_size
        if self.config.align == "canvas":
            q, k = position_grid(valid.shape[1], valid.device)  # [L, 1], [1, L]
            return apply_padding((k // size <= q // size)[None], valid)
        if target is None or target.shape != valid.shape:
            raise ValueError("block_causal with align=target needs target [batch, length] bool (the target positions)")
        target = target & valid
        block = torch.where(target, (target.long().cumsum(dim=1) - 1) // size, -1)  # [B, L] block of each target, -1 elsewhere
        cond_key = ~target[:, None, :]  # [B, 1, L] conditions are visible to all
        tgt_query = target[:, :, None]  # [B, L, 1]
        same_or_earlier = target[:, None, :] & (block[:, None, :] <= block[:, :, None])  # [B, L, L] target key in a block <= the query's
        return apply_padding(cond_key | (tgt_query & same_or_earlier), valid)
