"""Interface: backbone (token ids -> hidden states -> logits at requested positions)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import nn

from .component import Component


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
