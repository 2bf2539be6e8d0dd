"""TtT's split: ``objective.name: hybrid``.

Text targets get the shifted next-token CE (clean, teacher-forced), speech targets the
masked-diffusion CE, in one forward pass under an attention policy that is causal for text
(``attention.name: hybrid``, or ``causal``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffuspeech.attention import check_hybrid_policy, check_next_token_positions, states_before
from diffuspeech.modality import MODALITY_CODE, SPEECH
from diffuspeech.objective import LossOutput, Objective, ObjectiveContext
from diffuspeech.training.losses import check_loss_options, hybrid_cross_entropy, sample_time


@dataclass
class HybridObjectiveConfig:
    eps: float = 1e-3  # speech targets: t ~ U(eps, 1)
    normalize: str = "token"  # "token": sum / target tokens in the batch; "sequence": per-sequence mean, then batch mean
    time_sampling: str = "uniform"  # "uniform" | "stratified" (see the diffusion objective)
    weighting: str = "elbo"  # speech CE / p_mask ("elbo") or plain ("none"); text CE is never weighted


class HybridObjective(Objective):
    """TtT for one batch: text targets autoregressive, speech targets masked diffusion."""

    Config = HybridObjectiveConfig
    decoders = ("hybrid",)
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
        check_loss_options(c.normalize, "masked", c.weighting, c.time_sampling, c.eps)

    def prepare(self, context: ObjectiveContext) -> None:
        super().prepare(context)
        if context.attention is not None:
            check_hybrid_policy(context.attention, context.attention_name)

    def split(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``target, text_target, speech_target`` ``[B, L]`` bool each."""
        target = batch["target"] & batch["valid"]
        speech = batch["modality"] == MODALITY_CODE[SPEECH]
        return target, target & ~speech, target & speech

    def loss_at(self, backbone, batch, t: torch.Tensor, generator, attention_mask, normalize: str) -> tuple[torch.Tensor, int]:
        """The loss with each row's speech targets at its ``t [B]``; returns ``(loss, scored count)``."""
        ctx = self._context()
        target, text_target, speech_target = self.split(batch)
        predict_from = states_before(text_target)  # [B, L]
        if bool(predict_from.any()):
            check_next_token_positions(attention_mask, predict_from, ctx.attention_name)
        masked, p_mask = ctx.noiser(speech_target, batch["modality"], t, ctx.scheduler, generator)
        masked = masked.to(target.device) & speech_target
        loss = hybrid_cross_entropy(
            backbone, batch["ids"], text_target, masked, p_mask.to(target.device), target, ctx.mask_id, attention_mask,
            normalize=normalize, weighting=self.config.weighting,
        )
        return loss, int(text_target.sum()) + int(masked.sum())

    def loss(self, backbone, batch, generator=None, attention_mask=None) -> LossOutput:
        ids = batch["ids"]
        t = sample_time(ids.shape[0], float(self.config.eps), self.config.time_sampling, generator, ids.device)  # [B]
        loss, scored = self.loss_at(backbone, batch, t, generator, attention_mask, self.config.normalize)
        return LossOutput(loss=loss, num_masked=scored, num_target=int((batch["target"] & batch["valid"]).sum()))

    def dev_loss(self, backbone, batch, t, generator=None, attention_mask=None) -> torch.Tensor:
        times = torch.full((batch["ids"].shape[0],), float(t), device=batch["ids"].device)  # [B]
        return self.loss_at(backbone, batch, times, generator, attention_mask, "token")[0]
