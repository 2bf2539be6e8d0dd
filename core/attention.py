"""Interface: attention policy (who may attend to whom on the canvas), and the helpers policies share.

Helpers for implementations: :func:`check_inputs`, :func:`position_grid`, :func:`apply_padding`.
Properties of a mask that decoders and objectives rely on: :func:`is_causal`, :func:`sees_only_past`,
:func:`states_before`, and :func:`probe_canvas` to test a policy on a small mixed canvas.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from .component import Component
from .errors import ConfigError
from .modality import MODALITY_CODE, SPECIAL, SPEECH, TEXT


class AttentionPolicy(Component, ABC):
    """Builds boolean attention masks; True means "query may attend to key".

    A policy that also needs to know which positions are targets (e.g. blocks aligned with the decode
    blocks of the targets) sets ``needs_target = True`` and accepts ``mask(modality, valid, target=...)``;
    callers go through :func:`policy_mask`, which passes it only to such policies."""

    needs_target: ClassVar[bool] = False

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


# --------------------------------------------------------------------------- mask properties
def probe_canvas() -> tuple[torch.Tensor, torch.Tensor]:
    """``modality, valid`` ``[2, 16]`` of a small mixed canvas (special, speech, text, a later speech
    span), the second row padded: what the policy checks probe an attention policy on."""
    sp, tx, sc = MODALITY_CODE[SPECIAL], MODALITY_CODE[TEXT], MODALITY_CODE[SPEECH]
    row = [sp, sp, sc, sc, sc, sp, sp, tx, tx, sp, sp, sc, sc, sc, sp, tx]
    modality = torch.tensor([row, row])  # [2, 16]
    valid = torch.ones_like(modality, dtype=torch.bool)  # [2, 16]
    valid[1, 12:] = False
    return modality, valid


def probe_target(modality: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The probe canvas's targets ``[B, L]``: every text and speech position after the first two."""
    target = (modality != MODALITY_CODE[SPECIAL]) & valid
    target[:, :3] = False  # the task token, a start token and the first condition unit
    return target


def check_causal_mask(
    attention_mask: torch.Tensor | None,  # [B, 1, L, L] bool or None (= full attention)
    policy: str = "?",  # the attention policy's registered name, for the message
    what: str = "objective.name=autoregressive",
) -> None:
    """Raise :class:`ConfigError` unless no position may attend to a later one (lower-triangular)."""
    if attention_mask is not None and not bool(torch.triu(attention_mask, diagonal=1).any()):
        return
    raise ConfigError(
        f"{what} needs a causal attention policy, but attention.name={policy!r} lets positions attend to later "
        f"ones; set attention.name=causal (or any policy whose mask is lower-triangular), or use the diffusion objective/decoder"
    )


def check_causal_policy(policy: Any, name: str, what: str = "objective.name=autoregressive") -> None:
    """Probe an attention policy on a small mixed text/speech/padding canvas (see :func:`check_causal_mask`)."""
    modality, valid = probe_canvas()  # [2, 16] each
    check_causal_mask(policy_mask(policy, modality, valid, probe_target(modality, valid)), name, what)


def states_before(positions: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` bool -> ``[B, L]`` bool: the positions whose state predicts the next one (i-1 for each i)."""
    before = torch.zeros_like(positions)
    before[:, :-1] = positions[:, 1:]
    return before


def sees_only_past(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B, 1, L, L]`` bool -> ``[B, L]`` bool: True where the hidden state at q depends on no key after q.

    A layer at q reads the keys its row allows; those keys' earlier layers read theirs. With
    ``reach[q]`` = the furthest key any row at or before q may read (a running maximum), the
    state at q sees only positions <= q in every layer iff ``reach[q] <= q``. Causal masks pass
    everywhere; TtT's hybrid mask passes at text positions after any closed speech span."""
    b, _, length, _ = attention_mask.shape
    keys = torch.arange(length, device=attention_mask.device)  # [L]
    last_key = torch.where(attention_mask[:, 0], keys, -1).amax(dim=-1)  # [B, L] furthest key per query row
    reach = last_key.cummax(dim=1).values  # [B, L]
    return reach <= keys[None, :]


def check_next_token_positions(
    attention_mask: torch.Tensor | None,  # [B, 1, L, L] bool or None (= full attention)
    predict_from: torch.Tensor,  # [B, L] bool: positions whose hidden state predicts the next token
    policy: str = "?",
    what: str = "objective.name=hybrid",
) -> None:
    """Raise :class:`ConfigError` if a state that predicts a next token can see that token or a later one."""
    if attention_mask is not None and not bool((predict_from & ~sees_only_past(attention_mask)).any()):
        return
    raise ConfigError(
        f"{what} predicts each text token from the state before it, but attention.name={policy!r} lets that "
        f"state see later positions; set attention.name=hybrid (causal text, bidirectional speech spans) or causal"
    )


def check_hybrid_policy(policy: Any, name: str, what: str = "objective.name=hybrid") -> None:
    """Probe a policy on a mixed canvas: every state before a text position must see only the past."""
    modality, valid = probe_canvas()  # [2, 16] each
    predict_from = states_before((modality != MODALITY_CODE[SPEECH]) & valid)  # [2, 16] before each text/special position
    check_next_token_positions(policy_mask(policy, modality, valid, probe_target(modality, valid)), predict_from, name, what)


def policy_mask(policy: Any, modality: torch.Tensor, valid: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """``policy.mask(...)`` ``[B, 1, L, L]``, with ``target [B, L]`` for policies that set ``needs_target``."""
    if getattr(policy, "needs_target", False):
        if target is None:
            raise ValueError(f"attention policy {type(policy).__name__} needs the target positions (target=[B, L] bool)")
        return policy.mask(modality, valid, target=target)
    return policy.mask(modality, valid)
