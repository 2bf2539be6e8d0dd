"""TtT's split: ``objective.name: hybrid``.

Text targets get the shifted next-token CE (clean, teacher-forced), speech targets the
masked-diffusion CE, in one forward pass under an attention policy that is causal for text
(``attention.name: hybrid``, or ``causal``).

TtT's three training strategies, off by default (TtT's code values in brackets), close the gap
between training and its interleaved decoding:

- ``clean_audio_prob`` [0.1] (BANOM, ``unmasked_audio_prob``): with this probability a whole batch
  keeps its audio clean and gets the text loss only;
- ``prefix_preservation_ratio`` [0.3] (PPM): for this share of samples, every audio span before a
  random span start stays clean (context, not scored), as when earlier audio was already generated;
  spans are ``audio_span`` [26] consecutive speech-target tokens, TtT's audio block;
- ``truncate_last_span_prob`` [0.5] (SST, ``quad_span_truncation_prob``): the last speech span of a
  sample is cut to ``truncate_range`` [0.3, 0.9] of its tokens, its end token dropped, so the model
  learns to continue audio that has not finished.

``normalize: ttt`` reproduces TtT's two separately normalised terms (see ``hybrid_cross_entropy``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from diffuspeech.attention import check_hybrid_policy, check_next_token_positions, policy_mask, states_before
from diffuspeech.modality import MODALITY_CODE, SPEECH
from diffuspeech.objective import LossOutput, Objective, ObjectiveContext
from diffuspeech.training.losses import check_loss_options, hybrid_cross_entropy, sample_time


@dataclass
class HybridObjectiveConfig:
    eps: float = 1e-3  # speech targets: t ~ U(eps, 1)
    # "token": sum / target tokens in the batch | "sequence": per-sequence mean, then batch mean
    # | "ttt": TtT's text CE per sample + speech CE / p per maskable speech count, each averaged over the batch
    normalize: str = "token"
    time_sampling: str = "uniform"  # "uniform" | "stratified" (see the diffusion objective)
    weighting: str = "elbo"  # speech CE / p_mask ("elbo") or plain ("none"); text CE is never weighted
    clean_audio_prob: float = 0.0  # BANOM: a whole batch keeps its audio clean, text loss only (TtT: 0.1)
    prefix_preservation_ratio: float = 0.0  # PPM: share of samples whose audio before a random span start stays clean (TtT: 0.3)
    audio_span: int = 26  # PPM's spans: this many consecutive speech-target tokens (TtT's audio block)
    truncate_last_span_prob: float = 0.0  # SST: share of samples whose last speech span is cut, end token dropped (TtT: 0.5)
    truncate_range: list[float] = field(default_factory=lambda: [0.3, 0.9])  # SST keeps this share of the span's tokens


class HybridObjective(Objective):
    """TtT for one batch: text targets autoregressive, speech targets masked diffusion."""

    Config = HybridObjectiveConfig
    decoders = ("hybrid", "interleaved")
    untrained = {
        "diffusion": "text is read from masked-position predictions",
        "autoregressive": "speech is read from next-token predictions",
    }

    def __init__(self, config: HybridObjectiveConfig | None = None) -> None:
        super().__init__(config)
        self.check_config(self.config, "objective")

    @classmethod
    def check_config(cls, config, path: str) -> None:
        c = config
        check_loss_options("token" if c.normalize == "ttt" else c.normalize, "masked", c.weighting, c.time_sampling, c.eps)
        for key in ("clean_audio_prob", "prefix_preservation_ratio", "truncate_last_span_prob"):
            if not 0.0 <= float(getattr(c, key)) <= 1.0:
                raise ValueError(f"{path}.{key}: expected a probability in [0, 1], got {getattr(c, key)}")
        if c.audio_span < 1:
            raise ValueError(f"{path}.audio_span: expected a positive span length, got {c.audio_span}")
        lo_hi = list(c.truncate_range)
        if len(lo_hi) != 2 or not 0.0 < float(lo_hi[0]) <= float(lo_hi[1]) < 1.0:
            raise ValueError(f"{path}.truncate_range: expected [low, high] with 0 < low <= high < 1, got {lo_hi}")

    def prepare(self, context: ObjectiveContext) -> None:
        super().prepare(context)
        if context.attention is not None:
            check_hybrid_policy(context.attention, context.attention_name)

    def split(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``target, text_target, speech_target`` ``[B, L]`` bool each."""
        target = batch["target"] & batch["valid"]
        speech = batch["modality"] == MODALITY_CODE[SPEECH]
        return target, target & ~speech, target & speech

    def loss_at(
        self, backbone, batch, t: torch.Tensor, generator, attention_mask, normalize: str, preserved: torch.Tensor | None = None,
        clean_audio: bool = False,
    ) -> tuple[torch.Tensor, int]:
        """The loss with each row's speech targets at its ``t [B]``; returns ``(loss, scored count)``.

        ``preserved`` ``[B, L]``: speech targets kept clean and unscored (PPM); ``clean_audio``: no speech
        target is masked or scored (BANOM)."""
        ctx = self._context()
        target, text_target, speech_target = self.split(batch)
        if preserved is not None:
            speech_target = speech_target & ~preserved
        if clean_audio:
            speech_target = torch.zeros_like(speech_target)
        predict_from = states_before(text_target)  # [B, L]
        if bool(predict_from.any()):
            check_next_token_positions(attention_mask, predict_from, ctx.attention_name)
        masked, p_mask = ctx.noiser(speech_target, batch["modality"], t, ctx.scheduler, generator)
        masked = masked.to(target.device) & speech_target
        loss = hybrid_cross_entropy(
            backbone, batch["ids"], text_target, masked, p_mask.to(target.device), text_target | speech_target,
            ctx.mask_id, attention_mask, normalize=normalize, weighting=self.config.weighting, maskable=speech_target,
        )
        return loss, int(text_target.sum()) + int(masked.sum())

    def draw_truncation(self, rows: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """SST's draw: ``(picked [rows] bool, keep [rows] float)``, the share of each picked span's tokens kept."""
        c = self.config
        picked = torch.rand(rows, generator=generator) < c.truncate_last_span_prob  # [B]
        lo, hi = float(c.truncate_range[0]), float(c.truncate_range[1])
        return picked, lo + (hi - lo) * torch.rand(rows, generator=generator)  # [B], [B]

    def loss(self, backbone, batch, generator=None, attention_mask=None) -> LossOutput:
        c = self.config
        if c.truncate_last_span_prob > 0:
            batch = truncate_last_speech_span(batch, *self.draw_truncation(batch["ids"].shape[0], generator))
            attention = self._context().attention
            if attention is not None:  # positions moved: the mask follows the new canvas
                attention_mask = policy_mask(attention, batch["modality"], batch["valid"], batch["target"]).to(batch["ids"].device)
        clean_audio = c.clean_audio_prob > 0 and bool(torch.rand((), generator=generator) < c.clean_audio_prob)
        preserved = None
        if c.prefix_preservation_ratio > 0:
            preserved = preserved_prefix(batch, self.split(batch)[2], c.prefix_preservation_ratio, c.audio_span, generator)
        ids = batch["ids"]
        t = sample_time(ids.shape[0], float(c.eps), c.time_sampling, generator, ids.device)  # [B]
        loss, scored = self.loss_at(backbone, batch, t, generator, attention_mask, c.normalize, preserved, clean_audio)
        return LossOutput(loss=loss, num_masked=scored, num_target=int((batch["target"] & batch["valid"]).sum()))

    def dev_loss(self, backbone, batch, t, generator=None, attention_mask=None) -> torch.Tensor:
        times = torch.full((batch["ids"].shape[0],), float(t), device=batch["ids"].device)  # [B]
        return self.loss_at(backbone, batch, times, generator, attention_mask, "token")[0]


def speech_spans(speech_target: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per row, the ``[start, end)`` runs of consecutive speech-target positions."""
    spans = []
    for row in speech_target.tolist():
        runs, start = [], None
        for i, on in enumerate(row + [False]):
            if on and start is None:
                start = i
            elif not on and start is not None:
                runs.append((start, i))
                start = None
        spans.append(runs)
    return spans


def preserved_prefix(
    batch: dict[str, torch.Tensor], speech_target: torch.Tensor, ratio: float, span: int, generator: torch.Generator | None
) -> torch.Tensor:
    """PPM: ``[B, L]`` bool, the speech targets before a random span start in a ``ratio`` share of the rows.

    Each row's speech targets are cut into spans of ``span`` tokens (TtT's audio blocks); a chosen row
    with at least two spans keeps the spans before a uniformly drawn start (1 .. spans - 1) clean."""
    b = speech_target.shape[0]
    chosen = torch.rand(b, generator=generator) < ratio  # [B]
    draws = torch.rand(b, generator=generator)  # [B]
    out = torch.zeros_like(speech_target)
    for r, runs in enumerate(speech_spans(speech_target.cpu())):
        if not bool(chosen[r]) or not runs:
            continue
        positions = [p for s, e in runs for p in range(s, e)]  # the row's speech targets in order
        n_spans = -(-len(positions) // span)
        k = 1 + int(draws[r] * (n_spans - 1)) if n_spans > 1 else 0  # spans [0, k) stay clean, >= 1 span left to learn
        if k:
            out[r, torch.tensor(positions[: k * span], dtype=torch.long)] = True
    return out


def truncate_last_speech_span(batch: dict[str, torch.Tensor], picked: torch.Tensor, keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """SST: in the ``picked [B]`` rows, cut the last speech-target span to ``keep [B]`` of its tokens and drop
    everything after the cut up to and including the span's end token; later positions move left, the row
    is padded at the end (``valid`` False, pad ids)."""
    speech = (batch["modality"] == MODALITY_CODE[SPEECH]) & batch["target"] & batch["valid"]  # [B, L]
    spans = speech_spans(speech.cpu())
    out = {k: v.clone() for k, v in batch.items()}
    length = batch["ids"].shape[1]
    pad = {"ids": int(batch["ids"][~batch["valid"]][0]) if bool((~batch["valid"]).any()) else 0, "valid": False, "target": False,
           "condition": False, "segment": -1, "modality": int(MODALITY_CODE["special"])}
    for r, runs in enumerate(spans):
        if not bool(picked[r]) or not runs:
            continue
        start, end = runs[-1]
        n = end - start
        cut = start + max(1, min(n - 1, int(round(float(keep[r]) * n)))) if n > 1 else end
        drop_to = end + 1 if end < length and bool(batch["valid"][r, end]) else end  # the span's end token
        keep_idx = torch.cat([torch.arange(0, cut), torch.arange(drop_to, length)])  # [L'] positions that remain
        gone = length - keep_idx.numel()
        for key, value in batch.items():
            row = value[r, keep_idx.to(value.device)]
            fill = torch.full((gone,), pad.get(key, 0), dtype=value.dtype, device=value.device)
            out[key][r] = torch.cat([row, fill])
    return out
