"""The masked-diffusion objective (LLaDA-style, with selective masking): ``objective.name: diffusion``.

    t ~ U(eps, 1) per sequence
    masked ~ noiser(target, modality, t, scheduler)      # conditions are never masked
    loss = sum_{masked} CE(logits_i, x_i) / p_mask_i / normaliser

The output head runs only at masked positions: ``[n_masked, vocab]`` logits, never
``[batch, length, vocab]`` (unless ``logits_on: all``, kept for benchmarks and references).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffuspeech.backbone import Backbone
from diffuspeech.objective import LossOutput, Objective
from diffuspeech.training.losses import check_loss_options, masked_cross_entropy, sample_time


@dataclass
class DiffusionObjectiveConfig:
    eps: float = 1e-3  # t ~ U(eps, 1)
    normalize: str = "token"  # "token": sum / target tokens in the batch; "sequence": per-sequence mean, then batch mean
    logits_on: str = "masked"  # "masked" (head only where needed) | "all" (whole canvas; for benchmarks/reference only)
    time_sampling: str = "uniform"  # "uniform": t i.i.d. per sequence | "stratified": one t per stratum of each micro-batch (same law, lower variance)
    weighting: str = "elbo"  # "elbo": CE / p_mask (LLaDA's bound) | "none": plain CE at masked positions (MaskGIT-style, lower variance)


class MaskedDiffusionObjective(Objective):
    """Samples t, noises the targets and computes the weighted masked CE for one batch."""

    Config = DiffusionObjectiveConfig
    decoders = ("diffusion",)
    untrained = {
        "autoregressive": "next-token predictions are untrained",
        "hybrid": "text is decoded from next-token predictions that are untrained",
    }

    def __init__(self, config: DiffusionObjectiveConfig | None = None) -> None:
        super().__init__(config)
        self.check_config(self.config, "objective")

    @classmethod
    def check_config(cls, config, path: str) -> None:
        c = config
        check_loss_options(c.normalize, c.logits_on, c.weighting, c.time_sampling, c.eps)

    def sample_time(self, batch_size: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        """``[B]`` times in [eps, 1) (see :func:`diffuspeech.training.losses.sample_time`)."""
        return sample_time(batch_size, float(self.config.eps), self.config.time_sampling, generator, device)

    def loss_at(
        self, backbone: Backbone, batch: dict[str, torch.Tensor], t: torch.Tensor, generator, attention_mask, normalize: str
    ) -> tuple[torch.Tensor, int]:
        """The loss with every row at its ``t [B]``; returns ``(loss, masked count)``."""
        ctx = self._context()
        ids, target = batch["ids"], batch["target"] & batch["valid"]  # [B, L]
        masked, p_mask = ctx.noiser(target, batch["modality"], t, ctx.scheduler, generator)
        masked = masked.to(ids.device) & target
        loss = masked_cross_entropy(
            backbone, ids, masked, p_mask.to(ids.device), target, ctx.mask_id, attention_mask,
            normalize=normalize, logits_on=self.config.logits_on, weighting=self.config.weighting,
        )
        return loss, int(masked.sum())

    def loss(self, backbone, batch, generator=None, attention_mask=None) -> LossOutput:
        ids = batch["ids"]
        t = self.sample_time(ids.shape[0], generator, ids.device)  # [B]
        loss, n_masked = self.loss_at(backbone, batch, t, generator, attention_mask, self.config.normalize)
        return LossOutput(loss=loss, num_masked=n_masked, num_target=int((batch["target"] & batch["valid"]).sum()))

    def dev_loss(self, backbone, batch, t, generator=None, attention_mask=None) -> torch.Tensor:
        times = torch.full((batch["ids"].shape[0],), float(t), device=batch["ids"].device)  # [B]
        return self.loss_at(backbone, batch, times, generator, attention_mask, "token")[0]
