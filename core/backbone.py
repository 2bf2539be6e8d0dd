"""Interface: backbone (token ids -> hidden states -> logits at requested positions), and the
helpers every implementation needs: :func:`parse_dtype`, :func:`check_attention_mask`,
:func:`resized_rows` (vocabulary growth), and the optional KV-cache capability
(:class:`KVCache`, :func:`supports_kv_cache`; see ``diffuspeech.sampling.kv_cache``)."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .component import Component

__all__ = [
    "DTYPES", "INITS", "Backbone", "KVCache", "check_attention_mask", "check_inputs_embeds", "parse_dtype", "resized_rows",
    "supports_inputs_embeds", "supports_kv_cache",
]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def parse_dtype(name: str, where: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"{where}.dtype: unknown dtype {name!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[name]


def check_attention_mask(mask: torch.Tensor | None, batch: int, length: int) -> None:
    if mask is None:
        return
    if mask.dtype != torch.bool:
        raise TypeError(f"attention_mask must be bool (True = may attend), got {mask.dtype}")
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[-2:] != (length, length) or mask.shape[0] not in (1, batch):
        raise ValueError(
            f"attention_mask must have shape [batch, 1, length, length] = [{batch}, 1, {length}, {length}], "
            f"got {tuple(mask.shape)}; build it with an attention policy's mask(modality, valid)"
        )


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


@dataclass
class KVCache:
    """Keys and values of every canvas position, per layer, from one full forward."""

    keys: list[torch.Tensor]  # per layer [B, Hkv, L, Dh] (after RoPE)
    values: list[torch.Tensor]  # per layer [B, Hkv, L, Dh]

    @property
    def batch(self) -> int:
        return self.keys[0].shape[0]

    @property
    def length(self) -> int:
        return self.keys[0].shape[2]


def supports_inputs_embeds(backbone: object) -> bool:
    """Whether ``backbone`` has the embeddings path: ``supports_inputs_embeds = True``,
    ``embed_tokens(input_ids [B, L]) -> [B, L, D]``, and an ``inputs_embeds [B, L, D]`` keyword on
    ``hidden_states`` (and on ``hidden_states_and_cache`` / ``hidden_states_cached`` when it has the KV
    cache) that replaces the embedding lookup. Continuous speech segments (``modality: speech_features``,
    DIFFA) need it."""
    return bool(getattr(backbone, "supports_inputs_embeds", False)) and callable(getattr(backbone, "embed_tokens", None))


def check_inputs_embeds(inputs_embeds: torch.Tensor, input_ids: torch.Tensor, hidden_size: int) -> None:
    """``inputs_embeds`` must be ``[*input_ids.shape, hidden_size]`` floats."""
    want = (*input_ids.shape, hidden_size)
    if tuple(inputs_embeds.shape) != want or not inputs_embeds.is_floating_point():
        raise ValueError(
            f"inputs_embeds must be a float tensor of shape {want} (input_ids + hidden size), got {tuple(inputs_embeds.shape)} {inputs_embeds.dtype}"
        )


def supports_kv_cache(backbone: object) -> bool:
    """Whether ``backbone`` implements the cached-forward capability described in the module doc."""
    return (
        bool(getattr(backbone, "supports_kv_cache", False))
        and callable(getattr(backbone, "hidden_states_and_cache", None))
        and callable(getattr(backbone, "hidden_states_cached", None))
    )


class Backbone(nn.Module, Component):
    """A transformer over the unified vocabulary.

    The output head is separate from the body so callers can apply it only where logits
    are needed (masked positions during training, still-masked positions while sampling):
    never build ``[batch, length, vocab]`` logits unless asked to.
    """

    def __init__(self, config: Any = None) -> None:
        nn.Module.__init__(self)
        Component.__init__(self, config)

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Rows of the input embedding and output head."""

    @property
    @abstractmethod
    def hidden_size(self) -> int: ...

    @property
    @abstractmethod
    def max_seq_len(self) -> int:
        """Longest canvas the backbone supports."""

    @abstractmethod
    def hidden_states(
        self,
        input_ids: torch.Tensor,  # [batch, length] long
        attention_mask: torch.Tensor | None = None,  # [batch, 1, length, length] bool, True = attend; None = full
    ) -> torch.Tensor:
        """Return final (normed) hidden states ``[batch, length, hidden]``."""

    @abstractmethod
    def output_head(self) -> nn.Linear | nn.Module:
        """The module mapping ``[..., hidden]`` to ``[..., vocab]`` (weight ``[vocab, hidden]``)."""

    @abstractmethod
    def resize_vocab(self, new_size: int, init: str = "mean") -> None:
        """Grow (or shrink) embedding and head to ``new_size`` rows. Existing rows are kept
        bit-identical; new rows are initialised by ``init`` ("mean" of existing rows, or "normal")."""

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., hidden]`` -> ``[..., vocab]``."""
        return self.output_head()(hidden)

    def forward(
        self,
        input_ids: torch.Tensor,  # [batch, length]
        attention_mask: torch.Tensor | None = None,  # [batch, 1, length, length] bool
        logits_at: torch.Tensor | None = None,  # [batch, length] bool: positions to score; None = all
    ) -> torch.Tensor:
        """Logits ``[batch, length, vocab]``, or ``[n_selected, vocab]`` (row-major order)
        when ``logits_at`` is given."""
        hidden = self.hidden_states(input_ids, attention_mask)  # [B, L, D]
        if logits_at is not None:
            hidden = hidden[logits_at]  # [N, D]
        return self.logits(hidden)
