"""The same-size autoregressive baseline: ``objective.name: autoregressive``.

No masking: shifted next-token cross-entropy over the target positions (the hidden state at
i-1 predicts token i), under a causal attention policy (``attention.name: causal``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffuspeech.attention import check_causal_mask, check_causal_policy
from diffuspeech.objective import LossOutput, Objective, ObjectiveContext
from diffuspeech.training.losses import autoregressive_cross_entropy, check_loss_options


@dataclass
class AutoregressiveObjectiveConfig:
    normalize: str = "token"  # "token": sum / target tokens in the batch; "sequence": per-sequence mean, then batch mean
    logits_on: str = "masked"  # "masked" (head only at the states before targets) | "all" (whole canvas; reference only)


class AutoregressiveObjective(Objective):
    """The AR baseline's loss for one batch: no noise, shifted next-token CE over the targets."""

    Config = AutoregressiveObjectiveConfig
    decoders = ("autoregressive",)
    untrained = {
        "diffusion": "text and speech are read from masked-position predictions",
        "hybrid": "speech is read from masked-position predictions",
    }
    time_dependent = False  # nothing is noised: the same loss at every t

    def __init__(self, config: AutoregressiveObjectiveConfig | None = None) -> None:
        super().__init__(config)
        self.check_config(self.config, "objective")

    @classmethod
    def check_config(cls, config, path: str) -> None:
        check_loss_options(config.normalize, config.logits_on)

    def prepare(self, context: ObjectiveContext) -> None:
        super().prepare(context)
        if context.attention is not None:
            check_causal_policy(context.attention, context.attention_name)

    def _name(self) -> str:
        return self.context.attention_name if self.context is not None else "?"

    def loss(self, backbone, batch, generator=None, attention_mask=None) -> LossOutput:
        check_causal_mask(attention_mask, self._name())
        target = batch["target"] & batch["valid"]  # [B, L]
        loss = autoregressive_cross_entropy(
            backbone, batch["ids"], target, attention_mask, normalize=self.config.normalize, logits_on=self.config.logits_on
        )
        n = int(target.sum())
        return LossOutput(loss=loss, num_masked=n, num_target=n)

    def dev_loss(self, backbone, batch, t, generator=None, attention_mask=None) -> torch.Tensor:
        target = batch["target"] & batch["valid"]
        return autoregressive_cross_entropy(backbone, batch["ids"], target, attention_mask, "token", self.config.logits_on)
