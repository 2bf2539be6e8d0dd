"""Hierarchical block-wise masking (VocalNet-MDM): training states that look like block decoding.

Each row's target positions are cut, in reading order, into blocks of ``block_size`` (the decode
blocks of ``generation.block_length``, and of ``block_causal`` with ``align: target``). Per row:

    r_block ~ U(block_ratio)            share of the blocks that are still being decoded
    c = floor((1 - r_block) * n_blocks)  the block being decoded (clamped to the last block)
    blocks < c: clean                    already decoded
    block c:    each position masked with probability r_in ~ U(in_block_ratio), at least one
    blocks > c: fully masked             not decoded yet

``p_mask`` is the probability each masked position had under this distribution: ``r_in`` in the
current block, 1 in the later blocks, so the ELBO weighting (CE / p_mask) stays unbiased for the
current block and plain CE for the rest. The diffusion time ``t`` the objective draws is not used:
this noiser draws its own masking ratios (``scheduler`` is not used either).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from diffuspeech.noiser import Noiser


@dataclass
class HierarchicalBlockConfig:
    block_size: int = 16  # target positions per block (VocalNet-MDM: 16; match generation.block_length)
    block_ratio: list[float] = field(default_factory=lambda: [0.5, 1.0])  # U(lo, hi): share of the blocks still masked
    in_block_ratio: list[float] = field(default_factory=lambda: [0.3, 1.0])  # U(lo, hi): masking ratio inside the current block


class HierarchicalBlockNoiser(Noiser):
    Config = HierarchicalBlockConfig

    def __init__(self, config: HierarchicalBlockConfig | None = None) -> None:
        super().__init__(config)
        self.check_config(self.config, "noiser")

    @classmethod
    def check_config(cls, config, path: str) -> None:
        if config.block_size < 1:
            raise ValueError(f"{path}.block_size must be >= 1, got {config.block_size}")
        for key in ("block_ratio", "in_block_ratio"):
            lo_hi = list(getattr(config, key))
            if len(lo_hi) != 2 or not 0.0 < float(lo_hi[0]) <= float(lo_hi[1]) <= 1.0:
                raise ValueError(f"{path}.{key}: expected [low, high] with 0 < low <= high <= 1, got {lo_hi}")

    def __call__(self, target, modality, t, scheduler=None, generator=None):
        b, length = target.shape
        device = target.device
        c = self.config
        draw_device = generator.device if generator is not None else device
        r_block = _uniform(c.block_ratio, (b,), generator, draw_device).to(device)  # [B]
        r_in = _uniform(c.in_block_ratio, (b,), generator, draw_device).to(device)  # [B]
        u = torch.rand((b, length), generator=generator, device=draw_device).to(device)  # [B, L]
        rank = target.long().cumsum(dim=1) - 1  # [B, L] reading-order index among the targets
        block = torch.where(target, rank // c.block_size, -1)  # [B, L]
        n_blocks = (target.sum(dim=1) + c.block_size - 1) // c.block_size  # [B]
        current = torch.minimum(((1.0 - r_block) * n_blocks).floor().long(), (n_blocks - 1).clamp_min(0))  # [B]
        in_current = target & (block == current[:, None])  # [B, L]
        later = target & (block > current[:, None])  # [B, L]
        masked = later | (in_current & (u < r_in[:, None]))
        # at least one masked position in the current block: its first position when the draw left none
        empty = in_current.any(dim=1) & ~(masked & in_current).any(dim=1)  # [B]
        first = in_current & (in_current.long().cumsum(dim=1) == 1)  # [B, L]
        masked = masked | (first & empty[:, None])
        p_mask = torch.ones((b, length), dtype=torch.float32, device=device)
        p_mask = torch.where(in_current, r_in[:, None].expand(b, length), p_mask)
        return masked, p_mask


def _uniform(bounds, shape, generator, device) -> torch.Tensor:
    lo, hi = float(bounds[0]), float(bounds[1])
    return lo + (hi - lo) * torch.rand(shape, generator=generator, device=device)
