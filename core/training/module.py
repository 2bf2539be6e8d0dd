"""The module the trainer optimises: the model's nn.Module components + the objective.

DDP and FSDP hook into ``forward``; the objective calls ``backbone.hidden_states`` and
``backbone.logits``, so the loss is computed inside ``TrainModule.forward``. Parameter
names are ``<section>.<param>``, the keys of ``SpeechDiffusionModel.state_dict()``.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import nn

from ..attention import AttentionPolicy, policy_mask
from ..errors import ConfigError
from ..objective import Objective
from ..speech_features import SpeechFeatures, SplicedBackbone


class TrainModule(nn.Module):
    def __init__(self, modules: dict[str, nn.Module], objective: Objective, attention: AttentionPolicy) -> None:
        super().__init__()
        if "backbone" not in modules:
            raise ConfigError("training needs a `backbone` section in the config")
        for name, module in modules.items():
            self.add_module(name, module)
        self.objective, self.attention = objective, attention

    def forward(
        self,
        batch: dict[str, torch.Tensor],  # collate() output, [B, L] each
        generator: torch.Generator,  # CPU generator: t and the mask draw
        fixed_t: Optional[float] = None,  # evaluation: every sequence at this t, token-normalised loss
    ) -> torch.Tensor:
        attn = policy_mask(self.attention, batch["modality"], batch["valid"], batch["target"])  # [B, 1, L, L]
        backbone = self.backbone
        if "feature_audio" in batch:  # speech_features segments: encoder + adapters -> embeddings at their slots
            frontend = SpeechFeatures.of(self)
            if frontend is None:
                raise ConfigError("the batch has speech_features segments but the model has no `encoder` and `adapters` sections")
            embeds = frontend.embed(batch["feature_audio"], batch["feature_lengths"])  # [N slots, D]
            backbone = SplicedBackbone(self.backbone, batch["features"], embeds, self.objective._context().mask_id)
        if fixed_t is None:
            return self.objective.loss(backbone, batch, generator, attn).loss
        return self.objective.dev_loss(backbone, batch, float(fixed_t), generator, attn)


def select_trainable(module: nn.Module, train: list[str], freeze: list[str], where: str) -> list[str]:
    """Set ``requires_grad`` by name prefix; returns the trainable parameter names."""
    names = [n for n, _ in module.named_parameters()]
    sections = sorted({n.split(".")[0] for n in names})

    def matches(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    for key, prefixes in (("train", train), ("freeze", freeze)):
        for p in prefixes:
            if not any(matches(n, p) for n in names):
                raise ConfigError(
                    f"{where}.{key}: {p!r} matches no parameter; use a component section ({', '.join(sections)}) "
                    f"or a parameter-name prefix such as 'backbone.transformer.wte'"
                )
    chosen = []
    for name, param in module.named_parameters():
        on = any(matches(name, p) for p in train) and not any(matches(name, p) for p in freeze)
        param.requires_grad_(on)
        if on:
            chosen.append(name)
    if not chosen:
        raise ConfigError(f"{where}: no parameter left to train (train={list(train)}, freeze={list(freeze)})")
    return chosen


def build_optimizer(
    module: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], eps: float, fused: bool = True
) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not on norms, biases or other vectors).

    ``fused``: torch's fused AdamW kernel (CPU and CUDA; about 10x faster than the
    for-each path on CPU), used when every trainable parameter is a plain float tensor on one
    of those devices."""
    decay = [p for p in module.parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for p in module.parameters() if p.requires_grad and p.dim() < 2]
    groups: list[dict[str, Any]] = [{"params": decay, "weight_decay": weight_decay}]
    if other:
        groups.append({"params": other, "weight_decay": 0.0})
    params = decay + other
    fused = fused and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() and type(p.data) is torch.Tensor for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)


def lr_at(step: int, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``peak * min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))
