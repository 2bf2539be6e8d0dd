"""Shared helpers for attention policies: padding handling and position grids."""

from __future__ import annotations

import torch


def position_grid(length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Query and key indices as broadcastable grids: ``[L, 1]`` and ``[1, L]``."""
    pos = torch.arange(length, device=device)  # [L]
    return pos[:, None], pos[None, :]


def check_inputs(modality: torch.Tensor, valid: torch.Tensor) -> None:
    if modality.dim() != 2 or valid.shape != modality.shape:
        raise ValueError(
            f"attention policy expects modality and valid of shape [batch, length]; "
            f"got modality {tuple(modality.shape)} and valid {tuple(valid.shape)}"
        )
    if valid.dtype != torch.bool:
        raise TypeError(f"attention policy: valid must be a bool tensor, got {valid.dtype}")


def apply_padding(allowed: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Forbid padding keys; let padding query rows attend to themselves only.

    allowed: ``[B, L, L]`` or broadcastable ``[1, L, L]`` bool (query, key); valid: ``[B, L]`` bool.
    Returns ``[B, 1, L, L]`` bool with no all-False row.
    """
    batch, length = valid.shape
    eye = torch.eye(length, dtype=torch.bool, device=valid.device)  # [L, L]
    allowed = allowed.expand(batch, length, length) & valid[:, None, :]  # [B, L, L] keys must be real
    allowed = torch.where(valid[:, :, None], allowed, eye)  # padding queries: self only
    return allowed[:, None]  # [B, 1, L, L]
