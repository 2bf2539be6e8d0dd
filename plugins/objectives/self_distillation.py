"""Iterative self-distillation (VocalNet-MDM): ``objective.name: self_distillation``.

The student learns to predict in one step what a frozen teacher predicts after refining the same
noisy canvas for ``teacher_steps`` steps, so that fewer steps per block decode as well as many:

    x_t             = noiser(target, t)                          the student's input (as in diffusion)
    x'              = teacher decodes x_t for teacher_steps - 1 of its teacher_steps steps
                      (low-confidence reveals; the positions it would reveal last stay masked)
    L_rkl           = KL(student(x_t) / T || teacher(x') / T) at every masked position of x_t,
                      averaged over them (reverse KL: mode-seeking, at temperature T)
    loss            = (1 - weight) * L_diffusion(x_t) + weight * L_rkl

The teacher is a frozen copy of the backbone taken at the first step (or the backbone of a saved
model, ``teacher_path``); every ``refresh_every`` steps the student becomes the next teacher
(0 = never). Gradients reach the student only. Defaults are the reported ones (4 teacher steps,
temperature 2, weight 0.7), which a summary of the paper gave and are not verified against code.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from diffuspeech.objective import LossOutput, Objective, ObjectiveContext
from diffuspeech.speech_features import SplicedBackbone
from diffuspeech.training.losses import check_loss_options, masked_cross_entropy, sample_time


@dataclass
class SelfDistillationConfig:
    teacher_steps: int = 4  # K: the teacher refines the noisy canvas in this many steps
    temperature: float = 2.0  # T of the reverse KL (both distributions at logits / T)
    weight: float = 0.7  # loss = (1 - weight) * diffusion + weight * reverse KL
    refresh_every: int = 0  # optimizer steps between teacher refreshes (the student becomes the teacher); 0 = never
    teacher_path: Optional[str] = None  # a saved model folder whose backbone is the teacher; None = a copy of the student
    eps: float = 1e-3  # t ~ U(eps, 1) for the noisy canvas
    time_sampling: str = "uniform"  # "uniform" | "stratified"
    weighting: str = "elbo"  # the diffusion term's weighting (see the diffusion objective)


class SelfDistillationObjective(Objective):
    """Reverse-KL distillation of a K-step teacher into the one-step student, mixed with the diffusion loss."""

    Config = SelfDistillationConfig
    decoders = ("diffusion",)
    untrained = {"autoregressive": "next-token predictions are untrained", "hybrid": "text is decoded from untrained next-token predictions"}

    def __init__(self, config: SelfDistillationConfig | None = None) -> None:
        super().__init__(config)
        self.check_config(self.config, "objective")
        self.teacher: Optional[torch.nn.Module] = None
        self.calls = 0
        self.last_rkl: Optional[float] = None

    @classmethod
    def check_config(cls, config, path: str) -> None:
        check_loss_options("token", "masked", config.weighting, config.time_sampling, config.eps)
        if config.teacher_steps < 1:
            raise ValueError(f"{path}.teacher_steps must be >= 1, got {config.teacher_steps}")
        if not config.temperature > 0:
            raise ValueError(f"{path}.temperature must be > 0, got {config.temperature}")
        if not 0.0 <= config.weight <= 1.0:
            raise ValueError(f"{path}.weight must be in [0, 1], got {config.weight}")
        if config.refresh_every < 0:
            raise ValueError(f"{path}.refresh_every must be >= 0 (0 = never), got {config.refresh_every}")

    def prepare(self, context: ObjectiveContext) -> None:
        super().prepare(context)
        if self.config.teacher_path:
            from diffuspeech.model import SpeechDiffusionModel

            self.teacher = self._frozen(SpeechDiffusionModel.load(self.config.teacher_path).backbone)

    @staticmethod
    def _frozen(module: torch.nn.Module) -> torch.nn.Module:
        module = module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        return module

    def _teacher_for(self, student) -> torch.nn.Module:
        refresh = self.config.refresh_every and self.calls > 0 and self.calls % self.config.refresh_every == 0
        base = student.backbone if isinstance(student, SplicedBackbone) else student  # a view with this batch's speech embeddings
        if self.teacher is None or refresh:
            self.teacher = self._frozen(copy.deepcopy(base))
        return student.rebound(self.teacher) if isinstance(student, SplicedBackbone) else self.teacher

    @torch.no_grad()
    def teacher_logits(self, teacher, noisy: torch.Tensor, masked: torch.Tensor, valid: torch.Tensor, attention_mask) -> torch.Tensor:
        """``[N, V]`` teacher logits at the masked positions after ``teacher_steps - 1`` refinement steps."""
        from diffuspeech.sampling.generation import CanvasSpec, generate
        from diffuspeech.sampling.options import DecodeOptions

        ctx, k = self._context(), int(self.config.teacher_steps)
        refined = noisy
        if k > 1 and bool(masked.any()):
            canvas = CanvasSpec(tokens=noisy.clone(), mask_id=ctx.mask_id, valid=valid, attention_mask=attention_mask)
            steps = max(1, min(k, int(masked.sum(dim=1)[masked.any(dim=1)].min())))
            result = generate(teacher, canvas, DecodeOptions(steps=steps, record_trajectory=True, seed=0), sampler="low_confidence")
            last = result.trajectory >= steps - 1  # what the teacher reveals in its last step stays masked
            refined = torch.where(masked & last, ctx.mask_id, result.tokens)
        hidden = teacher.hidden_states(refined, attention_mask)  # [B, L, D]
        return teacher.logits(hidden[masked]).float()  # [N, V]

    def loss(self, backbone, batch, generator=None, attention_mask=None) -> LossOutput:
        ctx, c = self._context(), self.config
        teacher = self._teacher_for(backbone)
        self.calls += 1
        ids, target = batch["ids"], batch["target"] & batch["valid"]
        t = sample_time(ids.shape[0], float(c.eps), c.time_sampling, generator, ids.device)  # [B]
        masked, p_mask = ctx.noiser(target, batch["modality"], t, ctx.scheduler, generator)
        masked = masked.to(ids.device) & target
        noisy = torch.where(masked, ctx.mask_id, ids)  # [B, L]
        diffusion = masked_cross_entropy(backbone, ids, masked, p_mask.to(ids.device), target, ctx.mask_id, attention_mask,
                                         weighting=c.weighting)
        student = backbone.logits(backbone.hidden_states(noisy, attention_mask)[masked]).float()  # [N, V]
        t_logp = F.log_softmax(self.teacher_logits(teacher, noisy, masked, batch["valid"], attention_mask) / c.temperature, dim=-1)
        s_logp = F.log_softmax(student / c.temperature, dim=-1)  # [N, V]
        rkl = (s_logp.exp() * (s_logp - t_logp)).sum(dim=-1).mean() if masked.any() else student.sum() * 0  # KL(student || teacher)
        self.last_rkl = float(rkl.detach())
        loss = (1.0 - c.weight) * diffusion + c.weight * rkl
        return LossOutput(loss=loss, num_masked=int(masked.sum()), num_target=int(target.sum()))

    def dev_loss(self, backbone, batch, t, generator=None, attention_mask=None) -> torch.Tensor:
        ctx = self._context()
        target = batch["target"] & batch["valid"]
        times = torch.full((target.shape[0],), float(t), device=target.device)
        masked, p_mask = ctx.noiser(target, batch["modality"], times, ctx.scheduler, generator)
        return masked_cross_entropy(backbone, batch["ids"], masked.to(target.device) & target, p_mask.to(target.device), target,
                                    ctx.mask_id, attention_mask, weighting=self.config.weighting)
