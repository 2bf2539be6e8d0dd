"""The cross-entropy losses objectives are made of (masked diffusion, next-token, TtT's split).

Every function runs the output head only where a loss is needed (``[N, vocab]`` logits, never
``[batch, length, vocab]`` unless ``logits_on="all"``), and returns a normalised scalar.
Third-party objectives build on these (``from diffuspeech.training.losses import ...``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..backbone import Backbone
from ..errors import ConfigError

__all__ = [
    "LOGITS_ON_CHOICES", "NORMALIZE_CHOICES", "TIME_SAMPLING_CHOICES", "WEIGHTING_CHOICES",
    "autoregressive_cross_entropy", "check_loss_options", "hybrid_cross_entropy", "masked_cross_entropy",
    "normalised", "normalised_rows", "sample_time",
]

NORMALIZE_CHOICES = ("token", "sequence")
LOGITS_ON_CHOICES = ("masked", "all")
TIME_SAMPLING_CHOICES = ("uniform", "stratified")
WEIGHTING_CHOICES = ("elbo", "none")


def check_loss_options(normalize: str, logits_on: str = "masked", weighting: str = "elbo", time_sampling: str = "uniform", eps: float = 0.5) -> None:
    """Raise :class:`ConfigError` naming the ``objective.<key>`` that holds an invalid value."""
    if normalize not in NORMALIZE_CHOICES:
        raise ConfigError(f"objective.normalize: {normalize!r}; valid: {', '.join(NORMALIZE_CHOICES)}")
    if logits_on not in LOGITS_ON_CHOICES:
        raise ConfigError(f"objective.logits_on: {logits_on!r}; valid: {', '.join(LOGITS_ON_CHOICES)}")
    if weighting not in WEIGHTING_CHOICES:
        raise ConfigError(f"objective.weighting: {weighting!r}; valid: {', '.join(WEIGHTING_CHOICES)}")
    if time_sampling not in TIME_SAMPLING_CHOICES:
        raise ConfigError(f"objective.time_sampling: {time_sampling!r}; valid: {', '.join(TIME_SAMPLING_CHOICES)}")
    if not 0.0 < float(eps) < 1.0:
        raise ConfigError(f"objective.eps: expected a value in (0, 1), got {eps}")


def sample_time(
    batch_size: int, eps: float, time_sampling: str = "uniform", generator: torch.Generator | None = None, device: Any = "cpu"
) -> torch.Tensor:
    """``[B]`` times in [eps, 1). "stratified": row i gets one draw in [i/B, (i+1)/B), then the
    rows are shuffled: each t is still U(eps, 1), but a batch covers the range evenly."""
    u = torch.rand(batch_size, generator=generator)  # [B]
    if time_sampling == "stratified":
        strata = torch.randperm(batch_size, generator=generator)  # [B]
        u = (strata + u) / batch_size
    return (eps + (1.0 - eps) * u).to(device)


def normalised(
    losses: torch.Tensor,  # [N] per-position losses, row-major order of `scored`
    scored: torch.Tensor,  # [B, L'] bool: where the N losses come from (only its rows matter)
    target: torch.Tensor,  # [B, L] bool: the normaliser counts these
    normalize: str,
) -> torch.Tensor:
    """"token": sum / target tokens in the batch; "sequence": per-row sum / row targets, batch mean."""
    return normalised_rows(losses, scored.nonzero()[:, 0], target, normalize)


def normalised_rows(
    losses: torch.Tensor,  # [N] per-position losses
    rows: torch.Tensor,  # [N] long: the batch row of each loss
    target: torch.Tensor,  # [B, L] bool: the normaliser counts these
    normalize: str,
) -> torch.Tensor:
    if normalize == "token":
        return losses.sum() / target.sum().clamp_min(1)
    per_row = torch.zeros(target.shape[0], dtype=losses.dtype, device=losses.device)  # [B]
    per_row.index_add_(0, rows, losses)
    return (per_row / target.sum(dim=1).clamp_min(1)).mean()


def masked_cross_entropy(
    backbone: Backbone,
    ids: torch.Tensor,  # [B, L] clean ids
    masked: torch.Tensor,  # [B, L] bool
    p_mask: torch.Tensor,  # [B, L] float, > 0 where masked
    target: torch.Tensor,  # [B, L] bool: the loss normaliser counts these
    mask_id: int,
    attention_mask: torch.Tensor | None = None,  # [B, 1, L, L] bool
    normalize: str = "token",
    logits_on: str = "masked",
    weighting: str = "elbo",
) -> torch.Tensor:
    """The weighted CE of the masked positions, normalised; a scalar.

    weighting="elbo" divides each CE by its mask probability (the ELBO); "none" keeps plain CE."""
    check_loss_options(normalize, logits_on, weighting)
    noisy = torch.where(masked, torch.full_like(ids, mask_id), ids)  # [B, L]
    hidden = backbone.hidden_states(noisy, attention_mask)  # [B, L, D]
    if logits_on == "masked":
        logits = backbone.logits(hidden[masked])  # [N, V]
    else:
        logits = backbone.logits(hidden)[masked]  # [B, L, V] -> [N, V]
    ce = F.cross_entropy(logits.float(), ids[masked], reduction="none")  # [N]
    weighted = ce / p_mask[masked].to(ce.dtype) if weighting == "elbo" else ce  # [N]
    return normalised(weighted, masked, target, normalize)


def autoregressive_cross_entropy(
    backbone: Backbone,
    ids: torch.Tensor,  # [B, L] clean ids
    target: torch.Tensor,  # [B, L] bool: positions to predict (never position 0)
    attention_mask: torch.Tensor | None,  # [B, 1, L, L] bool, lower-triangular
    normalize: str = "token",
    logits_on: str = "masked",
) -> torch.Tensor:
    """Shifted next-token CE: the hidden state at i-1 predicts ``ids[:, i]`` for every target i; a scalar."""
    check_loss_options(normalize, logits_on)
    if bool(target[:, 0].any()):
        raise ValueError("autoregressive loss: position 0 is a target, but nothing precedes it to predict it from")
    hidden = backbone.hidden_states(ids, attention_mask)  # [B, L, D]
    nxt = target[:, 1:]  # [B, L-1]: is position i+1 a target
    labels = ids[:, 1:][nxt]  # [N] row-major, the order of hidden[:, :-1][nxt]
    if logits_on == "masked":
        logits = backbone.logits(hidden[:, :-1][nxt])  # [N, V]
    else:
        logits = backbone.logits(hidden)[:, :-1][nxt]  # [B, L, V] -> [N, V]
    ce = F.cross_entropy(logits.float(), labels, reduction="none")  # [N]
    return normalised(ce, nxt, target, normalize)


def hybrid_cross_entropy(
    backbone: Backbone,
    ids: torch.Tensor,  # [B, L] clean ids
    text_target: torch.Tensor,  # [B, L] bool: predicted from the state before them (never position 0)
    masked: torch.Tensor,  # [B, L] bool: masked speech targets, predicted at their own position
    p_mask: torch.Tensor,  # [B, L] float, > 0 where masked
    target: torch.Tensor,  # [B, L] bool: the loss normaliser counts these
    mask_id: int,
    attention_mask: torch.Tensor | None,  # [B, 1, L, L] bool, causal at the states before text targets
    normalize: str = "token",
    weighting: str = "elbo",
    maskable: torch.Tensor | None = None,  # [B, L] bool, normalize="ttt": the speech targets that could be masked
) -> torch.Tensor:
    """TtT's loss, one forward: shifted next-token CE on text targets + (weighted) masked CE on speech; a scalar.

    ``normalize="ttt"`` is TtT's own split: the text CE averaged per sample, then over the samples that
    have text targets, plus the speech CE / p summed per sample over its ``maskable`` count, then
    averaged over the samples that have maskable speech (two separately normalised terms)."""
    if normalize != "ttt":
        check_loss_options(normalize, "masked", weighting)
    if bool(text_target[:, 0].any()):
        raise ValueError("hybrid loss: position 0 is a text target, but nothing precedes it to predict it from")
    noisy = torch.where(masked, torch.full_like(ids, mask_id), ids)  # [B, L] speech targets masked, text clean
    hidden = backbone.hidden_states(noisy, attention_mask)  # [B, L, D]
    nxt = text_target[:, 1:]  # [B, L-1]: is position i+1 a text target
    states = torch.cat([hidden[:, :-1][nxt], hidden[masked]])  # [Nt + Ns, D]
    labels = torch.cat([ids[:, 1:][nxt], ids[masked]])  # [Nt + Ns]
    rows = torch.cat([nxt.nonzero()[:, 0], masked.nonzero()[:, 0]])  # [Nt + Ns]
    ce = F.cross_entropy(backbone.logits(states).float(), labels, reduction="none")  # [Nt + Ns]
    n_text = int(nxt.sum())
    if weighting == "elbo":
        ce = torch.cat([ce[:n_text], ce[n_text:] / p_mask[masked].to(ce.dtype)])
    if normalize == "ttt":
        b = ids.shape[0]
        text_sum = torch.zeros(b, dtype=ce.dtype, device=ce.device).index_add_(0, rows[:n_text], ce[:n_text])  # [B]
        audio_sum = torch.zeros(b, dtype=ce.dtype, device=ce.device).index_add_(0, rows[n_text:], ce[n_text:])  # [B]
        n_text_row = text_target.sum(dim=1).to(ce.dtype)  # [B]
        n_audio_row = (maskable if maskable is not None else masked).sum(dim=1).to(ce.dtype)  # [B]
        has_text, has_audio = n_text_row > 0, n_audio_row > 0
        l_ar = (text_sum / n_text_row.clamp_min(1))[has_text].sum() / has_text.sum().clamp_min(1)
        l_diff = (audio_sum / n_audio_row.clamp_min(1))[has_audio].sum() / has_audio.sum().clamp_min(1)
        return l_ar + l_diff
    return normalised_rows(ce, rows, target, normalize)
