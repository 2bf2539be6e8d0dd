"""Interface: training objective (the loss of one batch), a plugin kind like the others.

    objective:
      name: diffusion   # a registered objective: diffusion | autoregressive | hybrid | a plugin's
      eps: 1.0e-3       # ...the settings of that objective's Config

The trainer builds the objective with ``Class(config)``, calls :meth:`Objective.prepare` once
with what it shares with the rest of the model (:class:`ObjectiveContext`), then
:meth:`Objective.loss` per micro-batch and :meth:`Objective.dev_loss` for the dev curves.
The loss functions the built-ins are made of live in ``diffuspeech.training.losses``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch

from .backbone import Backbone
from .component import Component
from .noiser import Noiser
from .scheduler import MaskScheduler

__all__ = ["LossOutput", "Objective", "ObjectiveContext", "build_objective", "mode_mismatch_note"]


@dataclass
class ObjectiveContext:
    """What an objective shares with the model it trains (given to :meth:`Objective.prepare`)."""

    scheduler: MaskScheduler  # the model's masking schedule (per modality)
    noiser: Noiser  # which target tokens to mask at time t
    mask_id: int  # the vocabulary's [MASK] id
    attention: Any = None  # the model's AttentionPolicy (None: full attention)
    attention_name: str = "?"  # its registered name, for messages


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar
    num_masked: int  # positions scored
    num_target: int  # target positions in the batch


class Objective(Component, ABC):
    """The loss of one batch. A batch is ``collate()`` output: ``ids, modality, target, valid`` ``[B, L]``.

    Class attributes tell the rest of the framework what the objective fits:

    - ``decoders``: the ``generation.mode`` values whose predictions it trains (the first is the
      one to decode with); other decoders get a warning naming what they read untrained;
    - ``untrained``: ``generation.mode -> what that decoder reads that this objective never trains``;
    - ``time_dependent``: False when the dev loss does not depend on t (evaluated once).
    """

    decoders: ClassVar[tuple[str, ...]] = ("diffusion",)
    untrained: ClassVar[dict[str, str]] = {}
    time_dependent: ClassVar[bool] = True

    context: Optional[ObjectiveContext] = None

    def prepare(self, context: ObjectiveContext) -> None:
        """Called once before training: keep the context, check the attention policy fits
        (raise ``ConfigError`` naming ``attention.name`` and the fix if it does not)."""
        self.context = context

    @abstractmethod
    def loss(
        self,
        backbone: Backbone,
        batch: dict[str, torch.Tensor],  # ids, modality, target, valid [B, L]
        generator: torch.Generator | None = None,  # CPU generator: t and the mask draw
        attention_mask: torch.Tensor | None = None,  # [B, 1, L, L] bool, the policy's mask
    ) -> LossOutput:
        """The training loss of one micro-batch."""

    @abstractmethod
    def dev_loss(
        self,
        backbone: Backbone,
        batch: dict[str, torch.Tensor],
        t: float,  # every row at this diffusion time
        generator: torch.Generator | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The token-normalised dev loss at a fixed ``t`` (a scalar)."""

    def _context(self) -> ObjectiveContext:
        if self.context is None:
            raise RuntimeError(f"{type(self).__name__}: call prepare(ObjectiveContext(...)) before computing a loss")
        return self.context


def mode_mismatch_note(generation_mode: str, objective_name: str, objective_cls: type | None) -> list[str]:
    """A warning when ``generation.mode`` decodes with predictions the model's objective never trained."""
    decoders = getattr(objective_cls, "decoders", ("diffusion",))
    if objective_cls is None or generation_mode in decoders:
        return []
    why = getattr(objective_cls, "untrained", {}).get(generation_mode, "it reads predictions this objective does not train")
    return [
        f"generation.mode={generation_mode} on a model trained with objective.name={objective_name}: {why}; "
        f"decode with generation.mode={decoders[0]} (or train with an objective for generation.mode={generation_mode})"
    ]


def build_objective(node: Any, context: ObjectiveContext) -> Objective:
    """The objective a config node names (``{name: diffusion, ...}`` or ``"diffusion"``), prepared
    with ``context``: ``build_component("objectives", node, "objective")`` + :meth:`Objective.prepare`."""
    from .compose import build_component  # compose -> registry -> this module

    objective = build_component("objectives", node, "objective")
    objective.prepare(context)
    return objective
