"""Approximate KV caching for semi-autoregressive block decoding (Fast-dLLM v1).

While a block is decoded, the keys and values of positions outside it change little from
step to step. At the first step of each block the engine runs one full forward and keeps
every layer's keys and values (:class:`KVCache`); the block's remaining steps run the
transformer only on a *window* of positions whose queries attend over all keys, fresh at
the window and cached elsewhere:

- ``prefix``: the window is the block and everything after it (the suffix stays live);
  the keys before the block come from the cache.
- ``dual``: the window is the block only (first to last position of its targets); the
  keys before *and* after it come from the cache.

The cache is refreshed at every block start, so the approximation never spans two blocks.
It is exact when the cached keys cannot change within a block, e.g. with one step per block
(every step is then a full forward), or under a causal attention mask (a block never
influences the prefix, and the suffix is never attended by the block).

Backbone capability (optional, duck-typed). A backbone that sets ``supports_kv_cache = True``
implements::

    hidden_states_and_cache(input_ids [B, L], attention_mask [B, 1, L, L] | None)
        -> (hidden [B, L, D], KVCache)
    hidden_states_cached(input_ids [B, W], positions [B, W], cache, attention_mask [B, 1, L, L] | None)
        -> hidden [B, W, D]

``positions`` are the canvas positions of the window (increasing per row; RoPE uses them),
``attention_mask`` is the canvas mask (the backbone takes the window's query rows), and
``hidden_states_cached`` overwrites the window's keys/values in ``cache`` in place. Other
backbones keep working: the engine warns and runs full forwards.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch

from ..backbone import KVCache, supports_kv_cache
from .options import KV_CACHE_MODES

__all__ = ["KV_CACHE_MODES", "BlockForward", "block_window"]



def block_window(in_block: torch.Tensor, mode: str) -> torch.Tensor:
    """``[B, W]`` long canvas positions to recompute for the block marked in ``in_block [B, L]``.

    ``dual``: from the block's first to its last position; ``prefix``: from its first position
    to the end of the canvas. Rows share the width W (the widest span): a narrower row's
    window starts earlier (recomputing more is always allowed), and a row without this block
    gets the last W positions, none of which it will read.
    """
    if mode not in ("prefix", "dual"):
        raise ValueError(f"block_window: mode must be 'prefix' or 'dual', got {mode!r}")
    bsz, length = in_block.shape
    pos = torch.arange(length, device=in_block.device)  # [L]
    has = in_block.any(dim=1)  # [B]
    first = torch.where(in_block, pos, length).amin(dim=1)  # [B]
    end = torch.where(in_block, pos + 1, 0).amax(dim=1) if mode == "dual" else torch.full_like(first, length)  # [B]
    span = torch.where(has, end - first, 0)  # [B]
    width = max(1, int(span.max()))  # one host sync per block
    start = torch.minimum(torch.where(has, first, length), torch.full_like(first, length - width))  # [B]
    return start[:, None] + torch.arange(width, device=in_block.device)[None, :]  # [B, W]


class BlockForward:
    """Hidden states for the engine: full forwards, or Fast-dLLM cached window forwards.

    Call it once per denoising step with the step's input ``[R, L]`` (R = B, or 2B as one
    doubled batch with classifier-free guidance). The first call of a block runs a full
    forward (and fills the cache when caching); later calls of the same block run the window.
    Counts what ran: ``full_forwards`` and ``cached_forwards`` in network evaluations (a
    doubled batch counts ``copies`` = 2), ``positions_computed`` as query positions summed
    over the rows of every pass.
    """

    def __init__(
        self,
        backbone: torch.nn.Module,
        mode: str,
        attention: Optional[torch.Tensor],  # [R, 1, L, L] bool or None
        copies: int = 1,  # 2 with classifier-free guidance (conditional + unconditional rows)
    ) -> None:
        if mode not in KV_CACHE_MODES:
            raise ValueError(f"kv_cache must be one of {', '.join(KV_CACHE_MODES)}, got {mode!r}")
        if mode != "none" and not supports_kv_cache(backbone):
            warnings.warn(
                f"kv_cache={mode!r}: the backbone {type(backbone).__name__} has no cached forward "
                "(supports_kv_cache / hidden_states_and_cache / hidden_states_cached, see diffuspeech.sampling.kv_cache); "
                "running a full forward at every step instead",
                stacklevel=3,
            )
            mode = "none"
        self.backbone = backbone
        self.mode = mode
        self.attention = attention
        self.copies = copies
        self.cache: Optional[KVCache] = None
        self.cache_block = -1  # block the cache was filled for
        self.window: Optional[torch.Tensor] = None  # [R, W] positions of the current block's window
        self.full_forwards = 0
        self.cached_forwards = 0
        self.positions_computed = 0

    def __call__(
        self,
        inp: torch.Tensor,  # [R, L] long, the step's input canvas
        in_block: torch.Tensor,  # [B, L] bool, the current block's target positions
        blk: int,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(hidden [R, W, D], positions [R, W])``; positions is None when W is the whole canvas."""
        rows, length = inp.shape
        if self.mode == "none":
            self.full_forwards += self.copies
            self.positions_computed += rows * length
            return self.backbone.hidden_states(inp, self.attention), None  # [R, L, D]
        if self.cache_block != blk or self.cache is None:
            hidden, self.cache = self.backbone.hidden_states_and_cache(inp, self.attention)  # [R, L, D]
            self.cache_block = blk
            self.window = block_window(in_block, self.mode).repeat(rows // in_block.shape[0], 1)  # [R, W]
            self.full_forwards += self.copies
            self.positions_computed += rows * length
            return hidden, None
        window = self.window
        ids = inp.gather(1, window)  # [R, W]
        hidden = self.backbone.hidden_states_cached(ids, window, self.cache, self.attention)  # [R, W, D]
        self.cached_forwards += self.copies
        self.positions_computed += rows * window.shape[1]
        return hidden, window
