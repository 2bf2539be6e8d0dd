"""Interface: attention policy (who may attend to whom on the canvas)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from .component import Component


class AttentionPolicy(Component, ABC):
    """Builds boolean attention masks; True means "query may attend to key"."""

    @abstractmethod
    def mask(
        self,
        modality: torch.Tensor,  # [batch, length] long modality codes (diffuspeech.modality.MODALITY_CODE)
        valid: torch.Tensor,  # [batch, length] bool, False at padding
    ) -> torch.Tensor:
        """Return ``[batch, 1, length, length]`` bool, usable as an SDPA ``attn_mask``.

        Every query row must allow at least one key (padding rows may attend to themselves),
        so softmax never sees an all -inf row.
        """
