"""The masked-diffusion training objective (LLaDA-style, with selective masking).

    t ~ U(eps, 1) per sequence
    masked ~ noiser(target, modality, t, scheduler)      # conditions are never masked
    loss = sum_{masked} CE(logits_i, x_i) / p_mask_i / normaliser

The output head runs only at masked positions: ``[n_masked, vocab]`` logits, never
``[batch, length, vocab]``.

``objective.mode: autoregressive`` is the same-size AR baseline: no masking, shifted
next-token cross-entropy over the target positions (the hidden state at i-1 predicts token
i), under a causal attention policy (:class:`AutoregressiveObjective`).

``objective.mode: hybrid`` is TtT's split (:class:`HybridObjective`): text targets get the
shifted next-token CE, speech targets the masked-diffusion CE, in one forward pass under
an attention policy that is causal for text (``attention.name=hybrid``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .backbone import Backbone
from .compose import SECTION_SCHEMAS, ConfigError
from .noiser import Noiser
from .scheduler import MaskScheduler


@dataclass
class ObjectiveConfig:
    eps: float = 1e-3  # t ~ U(eps, 1)
    normalize: str = "token"  # "token": sum / target tokens in the batch; "sequence": per-sequence mean, then batch mean
    logits_on: str = "masked"  # "masked" (head only where needed) | "all" (whole canvas; for benchmarks/reference only)
    mode: str = "diffusion"  # "diffusion" | "autoregressive" (shifted next-token CE on the targets; needs attention.name=causal) | "hybrid" (TtT: AR text + diffusion speech; needs attention.name=hybrid or causal)
    time_sampling: str = "uniform"  # "uniform": t i.i.d. per sequence | "stratified": one t per stratum of each micro-batch (same law, lower variance)
    weighting: str = "elbo"  # "elbo": CE / p_mask (LLaDA's bound) | "none": plain CE at masked positions (MaskGIT-style, lower variance)


SECTION_SCHEMAS["objective"] = ObjectiveConfig

NORMALIZE_CHOICES = ("token", "sequence")
LOGITS_ON_CHOICES = ("masked", "all")
TIME_SAMPLING_CHOICES = ("uniform", "stratified")
WEIGHTING_CHOICES = ("elbo", "none")
MODE_CHOICES = ("diffusion", "autoregressive", "hybrid")


def _check_loss_options(normalize: str, logits_on: str, weighting: str = "elbo") -> None:
    if normalize not in NORMALIZE_CHOICES:
        raise ConfigError(f"objective.normalize: {normalize!r}; valid: {', '.join(NORMALIZE_CHOICES)}")
    if logits_on not in LOGITS_ON_CHOICES:
        raise ConfigError(f"objective.logits_on: {logits_on!r}; valid: {', '.join(LOGITS_ON_CHOICES)}")
    if weighting not in WEIGHTING_CHOICES:
        raise ConfigError(f"objective.weighting: {weighting!r}; valid: {', '.join(WEIGHTING_CHOICES)}")


def _normalised(
    losses: torch.Tensor,  # [N] per-position losses, row-major order of `scored`
    scored: torch.Tensor,  # [B, L'] bool: where the N losses come from (only its rows matter)
    target: torch.Tensor,  # [B, L] bool: the normaliser counts these
    normalize: str,
) -> torch.Tensor:
    """"token": sum / target tokens in the batch; "sequence": per-row sum / row targets, batch mean."""
    return _normalised_rows(losses, scored.nonzero()[:, 0], target, normalize)


def _normalised_rows(
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



@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar
    num_masked: int
    num_target: int


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
    _check_loss_options(normalize, logits_on, weighting)
    noisy = torch.where(masked, torch.full_like(ids, mask_id), ids)  # [B, L]
    hidden = backbone.hidden_states(noisy, attention_mask)  # [B, L, D]
    if logits_on == "masked":
        logits = backbone.logits(hidden[masked])  # [N, V]
    else:
        logits = backbone.logits(hidden)[masked]  # [B, L, V] -> [N, V]
    ce = F.cross_entropy(logits.float(), ids[masked], reduction="none")  # [N]
    weighted = ce / p_mask[masked].to(ce.dtype) if weighting == "elbo" else ce  # [N]
    return _normalised(weighted, masked, target, normalize)


class MaskedDiffusionObjective:
    """Samples t, noises the targets and computes the loss for one batch."""

    def __init__(self, config: ObjectiveConfig, scheduler: MaskScheduler, noiser: Noiser, mask_id: int) -> None:
        if not 0.0 < float(config.eps) < 1.0:
            raise ConfigError(f"objective.eps: expected a value in (0, 1), got {config.eps}")
        if config.time_sampling not in TIME_SAMPLING_CHOICES:
            raise ConfigError(f"objective.time_sampling: {config.time_sampling!r}; valid: {', '.join(TIME_SAMPLING_CHOICES)}")
        _check_loss_options(config.normalize, config.logits_on, config.weighting)
        self.config, self.scheduler, self.noiser, self.mask_id = config, scheduler, noiser, mask_id

    def sample_time(self, batch_size: int, generator: torch.Generator | None = None, device: Any = "cpu") -> torch.Tensor:
        """``[B]`` times in [eps, 1). "stratified": row i gets one draw in [i/B, (i+1)/B), then the
        rows are shuffled: each t is still U(eps, 1), but a batch covers the range evenly."""
        eps = float(self.config.eps)
        u = torch.rand(batch_size, generator=generator)  # [B]
        if self.config.time_sampling == "stratified":
            strata = torch.randperm(batch_size, generator=generator)  # [B]
            u = (strata + u) / batch_size
        return (eps + (1.0 - eps) * u).to(device)

    def __call__(
        self,
        backbone: Backbone,
        batch: dict[str, torch.Tensor],  # ids, modality, target, valid [B, L]
        generator: torch.Generator | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> LossOutput:
        ids, target = batch["ids"], batch["target"] & batch["valid"]
        t = self.sample_time(ids.shape[0], generator, ids.device)  # [B]
        masked, p_mask = self.noiser(target, batch["modality"], t, self.scheduler, generator)
        masked = masked.to(ids.device) & target
        loss = masked_cross_entropy(
            backbone, ids, masked, p_mask.to(ids.device), target, self.mask_id, attention_mask,
            normalize=self.config.normalize, logits_on=self.config.logits_on, weighting=self.config.weighting,
        )
        return LossOutput(loss=loss, num_masked=int(masked.sum()), num_target=int(target.sum()))


# --------------------------------------------------------------------------- autoregressive baseline
def check_causal_mask(
    attention_mask: torch.Tensor | None,  # [B, 1, L, L] bool or None (= full attention)
    policy: str = "?",  # the attention policy's registered name, for the message
    what: str = "objective.mode=autoregressive",
) -> None:
    """Raise :class:`ConfigError` unless no position may attend to a later one (lower-triangular)."""
    if attention_mask is not None and not bool(torch.triu(attention_mask, diagonal=1).any()):
        return
    raise ConfigError(
        f"{what} needs a causal attention policy, but attention.name={policy!r} lets positions attend to later "
        f"ones; set attention.name=causal (or any policy whose mask is lower-triangular), or use the diffusion mode"
    )


def check_causal_policy(policy: Any, name: str, what: str = "objective.mode=autoregressive") -> None:
    """Probe an attention policy on a small mixed text/speech/padding canvas (see :func:`check_causal_mask`)."""
    modality, valid = _probe_canvas()  # [2, 16] each
    check_causal_mask(policy.mask(modality, valid), name, what)


def autoregressive_cross_entropy(
    backbone: Backbone,
    ids: torch.Tensor,  # [B, L] clean ids
    target: torch.Tensor,  # [B, L] bool: positions to predict (never position 0)
    attention_mask: torch.Tensor | None,  # [B, 1, L, L] bool, lower-triangular
    normalize: str = "token",
    logits_on: str = "masked",
) -> torch.Tensor:
    """Shifted next-token CE: the hidden state at i-1 predicts ``ids[:, i]`` for every target i; a scalar."""
    _check_loss_options(normalize, logits_on)
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
    return _normalised(ce, nxt, target, normalize)


class AutoregressiveObjective:
    """The AR baseline's loss for one batch: no noise, shifted next-token CE over the targets."""

    def __init__(self, config: ObjectiveConfig, policy_name: str = "?") -> None:
        self.config, self.policy_name = config, policy_name

    def __call__(
        self,
        backbone: Backbone,
        batch: dict[str, torch.Tensor],  # ids, modality, target, valid [B, L]
        generator: torch.Generator | None = None,  # unused: nothing is random
        attention_mask: torch.Tensor | None = None,  # [B, 1, L, L] bool, must be lower-triangular
    ) -> LossOutput:
        check_causal_mask(attention_mask, self.policy_name)
        target = batch["target"] & batch["valid"]  # [B, L]
        loss = autoregressive_cross_entropy(
            backbone, batch["ids"], target, attention_mask, normalize=self.config.normalize, logits_on=self.config.logits_on
        )
        n = int(target.sum())
        return LossOutput(loss=loss, num_masked=n, num_target=n)


# --------------------------------------------------------------------------- hybrid (TtT)
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
    what: str = "objective.mode=hybrid",
) -> None:
    """Raise :class:`ConfigError` if a state that predicts a next token can see that token or a later one."""
    if attention_mask is not None and not bool((predict_from & ~sees_only_past(attention_mask)).any()):
        return
    raise ConfigError(
        f"{what} predicts each text token from the state before it, but attention.name={policy!r} lets that "
        f"state see later positions; set attention.name=hybrid (causal text, bidirectional speech spans) or causal"
    )


def check_hybrid_policy(policy: Any, name: str, what: str = "objective.mode=hybrid") -> None:
    """Probe a policy on a mixed canvas: every state before a text position must see only the past."""
    from .modality import MODALITY_CODE, SPEECH

    modality, valid = _probe_canvas()  # [2, 16] each
    predict_from = states_before((modality != MODALITY_CODE[SPEECH]) & valid)  # [2, 16] before each text/special position
    check_next_token_positions(policy.mask(modality, valid), predict_from, name, what)


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
) -> torch.Tensor:
    """TtT's loss, one forward: shifted next-token CE on text targets + (weighted) masked CE on speech; a scalar."""
    _check_loss_options(normalize, "masked", weighting)
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
    return _normalised_rows(ce, rows, target, normalize)


class HybridObjective:
    """TtT for one batch: text targets autoregressive (clean, teacher-forced), speech targets masked diffusion."""

    def __init__(self, config: ObjectiveConfig, scheduler: MaskScheduler, noiser: Noiser, mask_id: int, policy_name: str = "?") -> None:
        self.diffusion = MaskedDiffusionObjective(config, scheduler, noiser, mask_id)  # validates eps, time sampling, loss options
        if config.logits_on != "masked":
            raise ConfigError(f"objective.logits_on: {config.logits_on!r} is not supported with objective.mode=hybrid; use 'masked'")
        self.config, self.scheduler, self.noiser, self.mask_id, self.policy_name = config, scheduler, noiser, mask_id, policy_name

    def split(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``target, text_target, speech_target`` ``[B, L]`` bool each."""
        from .modality import MODALITY_CODE, SPEECH

        target = batch["target"] & batch["valid"]
        speech = batch["modality"] == MODALITY_CODE[SPEECH]
        return target, target & ~speech, target & speech

    def loss_at(
        self,
        backbone: Backbone,
        batch: dict[str, torch.Tensor],
        t: torch.Tensor,  # [B] diffusion time of each row's speech targets
        generator: torch.Generator | None,
        attention_mask: torch.Tensor | None,
        normalize: str,
    ) -> tuple[torch.Tensor, int]:
        target, text_target, speech_target = self.split(batch)
        predict_from = states_before(text_target)  # [B, L]
        if bool(predict_from.any()):
            check_next_token_positions(attention_mask, predict_from, self.policy_name)
        masked, p_mask = self.noiser(speech_target, batch["modality"], t, self.scheduler, generator)
        masked = masked.to(target.device) & speech_target
        loss = hybrid_cross_entropy(
            backbone, batch["ids"], text_target, masked, p_mask.to(target.device), target, self.mask_id, attention_mask,
            normalize=normalize, weighting=self.config.weighting,
        )
        return loss, int(text_target.sum()) + int(masked.sum())

    def __call__(
        self,
        backbone: Backbone,
        batch: dict[str, torch.Tensor],  # ids, modality, target, valid [B, L]
        generator: torch.Generator | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> LossOutput:
        t = self.diffusion.sample_time(batch["ids"].shape[0], generator, batch["ids"].device)  # [B]
        loss, scored = self.loss_at(backbone, batch, t, generator, attention_mask, self.config.normalize)
        return LossOutput(loss=loss, num_masked=scored, num_target=int((batch["target"] & batch["valid"]).sum()))


def _probe_canvas() -> tuple[torch.Tensor, torch.Tensor]:
    """``modality, valid`` ``[2, 16]`` of a small mixed canvas (special, speech, text, a later speech
    span), the second row padded: what the policy checks probe an attention policy on."""
    from .modality import MODALITY_CODE, SPECIAL, SPEECH, TEXT

    sp, tx, sc = MODALITY_CODE[SPECIAL], MODALITY_CODE[TEXT], MODALITY_CODE[SPEECH]
    row = [sp, sp, sc, sc, sc, sp, sp, tx, tx, sp, sp, sc, sc, sc, sp, tx]
    modality = torch.tensor([row, row])  # [2, 16]
    valid = torch.ones_like(modality, dtype=torch.bool)  # [2, 16]
    valid[1, 12:] = False
    return modality, valid


def build_objective(
    config: ObjectiveConfig, scheduler: MaskScheduler, noiser: Noiser, mask_id: int, policy: Any = None, policy_name: str = "?"
) -> MaskedDiffusionObjective | AutoregressiveObjective | HybridObjective:
    """The objective ``objective.mode`` names; the AR and hybrid modes probe ``policy`` (the attention policy)."""
    if config.mode not in MODE_CHOICES:
        raise ConfigError(f"objective.mode: {config.mode!r}; valid: {', '.join(MODE_CHOICES)}")
    if config.mode == "diffusion":
        return MaskedDiffusionObjective(config, scheduler, noiser, mask_id)
    if config.mode == "hybrid":
        if policy is not None:
            check_hybrid_policy(policy, policy_name)
        return HybridObjective(config, scheduler, noiser, mask_id, policy_name)
    if policy is not None:
        check_causal_policy(policy, policy_name)
    return AutoregressiveObjective(config, policy_name)
