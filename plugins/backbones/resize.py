"""Grow or shrink a ``[rows, dim]`` weight while keeping existing rows bit-identical."""

from __future__ import annotations

import torch

INITS = ("mean", "normal")


@torch.no_grad()
def resized_rows(weight: torch.Tensor, new_rows: int, init: str = "mean", std: float = 0.02) -> torch.Tensor:
    """A new ``[new_rows, dim]`` tensor: the first ``min(old, new)`` rows copied exactly, added rows
    filled by ``init``: "mean" (mean of the old rows, computed in float32) or "normal" (N(0, std))."""
    if init not in INITS:
        raise ValueError(f"new_row_init: unknown init {init!r}; valid: {', '.join(INITS)}")
    if new_rows < 1:
        raise ValueError(f"vocabulary size must be >= 1, got {new_rows}")
    old_rows, dim = weight.shape
    out = torch.empty(new_rows, dim, dtype=weight.dtype, device=weight.device)  # [V', D]
    keep = min(old_rows, new_rows)
    out[:keep].copy_(weight[:keep])
    if new_rows > old_rows:
        if init == "mean":
            out[old_rows:] = weight.float().mean(dim=0, keepdim=True).to(weight.dtype)
        else:
            out[old_rows:].normal_(mean=0.0, std=std)
    return out
