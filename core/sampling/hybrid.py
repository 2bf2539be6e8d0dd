"""Hybrid decoding (TtT): text targets left to right, then speech targets by masked diffusion.

The decoder of a model trained with ``objective.name: hybrid`` under ``attention.name: hybrid``
(causal text, bidirectional speech spans). Two phases on one :class:`CanvasSpec`:

1. **text**: :func:`~diffuspeech.sampling.autoregressive.ar_decode` fills every text (and special) target,
   one token per row per pass, each from the state before it; speech targets stay masks. In
   training the text was teacher-forced with the speech targets masked at rate t, so text that
   follows a speech target sees masks in both (t = 1 here).
2. **speech**: :func:`~diffuspeech.sampling.generation.generate` denoises the speech targets, each span
   reading all the text before it, with the engine's steps, blocks, sampler and scheduler.

The result is the engine's :class:`GenerationResult`: passes, steps and positions are the sums
of both phases; the trajectory numbers the text passes first, then the speech steps after them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from ..backbone import Backbone
from ..sampler import Sampler
from ..scheduler import MaskScheduler
from .autoregressive import ARDecodeOptions, ar_decode
from .generation import SPEECH_CODE, CanvasSpec, GenerationResult, StepInfo, _per_position, diffusion_steps, generate
from .options import DecodeOptions, GenerationError

__all__ = ["hybrid_decode", "speech_targets"]


def speech_targets(canvas: CanvasSpec) -> torch.Tensor:
    """``[B, L]`` bool: the masked, valid speech positions of the canvas."""
    tokens = canvas.tokens
    valid = _per_position(canvas.valid, "valid", tokens.shape, True, torch.bool, tokens.device)
    modality = _per_position(canvas.modality, "modality", tokens.shape, 0, torch.long, tokens.device)
    return (tokens == int(canvas.mask_id)) & valid & (modality == SPEECH_CODE)


@torch.no_grad()
def hybrid_decode(
    backbone: Backbone,
    canvas: CanvasSpec,
    text_options: ARDecodeOptions,
    speech_options: DecodeOptions,
    *,
    sampler: Sampler | str | dict = "low_confidence",
    scheduler: MaskScheduler | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    interleaved: bool = False,
) -> GenerationResult:
    """Fill the canvas's text targets autoregressively, then its speech targets by diffusion.

    ``interleaved`` (TtT's decoding order): target segment by target segment in reading order,
    text left to right, speech by diffusion in blocks of ``speech_options.block_length`` with early
    stop at its end token, so text after a spoken span is decoded from the finished speech.
    Positions after the segment being diffused are left out of that phase (they are later; under
    TtT's mask no earlier position reads them), so the engine fills that segment only."""
    if interleaved:
        return _interleaved(backbone, canvas, text_options, speech_options, sampler, scheduler, on_step)
    speech = speech_targets(canvas)  # [B, L]
    valid = _per_position(canvas.valid, "valid", canvas.tokens.shape, True, torch.bool, canvas.tokens.device)
    text = (canvas.tokens == int(canvas.mask_id)) & valid & ~speech  # [B, L]
    record = text_options.record_trajectory or speech_options.record_trajectory
    phases: list[tuple[GenerationResult, torch.Tensor]] = []
    tokens = canvas.tokens
    if bool(text.any()):
        first = ar_decode(backbone, canvas, dataclasses.replace(text_options, record_trajectory=record), on_step=on_step, only=text)
        tokens = first.tokens
        phases.append((first, text))
    if bool(speech.any()):
        second = generate(
            backbone,
            dataclasses.replace(canvas, tokens=tokens),
            dataclasses.replace(speech_options, record_trajectory=record),
            sampler=sampler,
            scheduler=scheduler,
            on_step=on_step,
        )
        tokens = second.tokens
        phases.append((second, speech))
    return _merge(phases, tokens, record, canvas)


def _interleaved(backbone, canvas, text_options, speech_options, sampler, scheduler, on_step) -> GenerationResult:
    shape, device, mask_id = canvas.tokens.shape, canvas.tokens.device, int(canvas.mask_id)
    valid = _per_position(canvas.valid, "valid", shape, True, torch.bool, device)
    segment = _per_position(canvas.segment, "segment", shape, 0, torch.long, device)
    speech = speech_targets(canvas)  # [B, L]
    record = text_options.record_trajectory or speech_options.record_trajectory
    positions = torch.arange(shape[1], device=device)  # [L]
    phases: list[tuple[GenerationResult, torch.Tensor]] = []
    tokens = canvas.tokens
    for s in range(int(segment.max()) + 1 if segment.numel() else 0):
        where = (tokens == mask_id) & valid & (segment == s)  # [B, L] this segment's masks
        if not bool(where.any()):
            continue
        if bool((where & ~speech).any()):  # a text segment: left to right
            result = ar_decode(backbone, dataclasses.replace(canvas, tokens=tokens),
                               dataclasses.replace(text_options, record_trajectory=record), on_step=on_step, only=where)
        else:  # a speech segment: diffusion over this segment only, later positions left out
            last = torch.where(segment == s, positions, -1).amax(dim=1)  # [B] last position of the segment
            upto = valid & (positions[None, :] <= last[:, None])  # [B, L]
            steps = diffusion_steps(speech_options, where)
            result = generate(backbone, dataclasses.replace(canvas, tokens=tokens, valid=upto),
                              dataclasses.replace(speech_options, steps=steps, record_trajectory=record),
                              sampler=sampler, scheduler=scheduler, on_step=on_step)
            result.tokens = torch.where(upto, result.tokens, tokens)  # positions left out keep their ids
        tokens = result.tokens
        phases.append((result, where))
    return _merge(phases, tokens, record, canvas)


def _merge(phases, tokens, record: bool, canvas: CanvasSpec) -> GenerationResult:
    """One :class:`GenerationResult` from the phases run in order (trajectories numbered on)."""
    if not phases:
        raise GenerationError(f"nothing to generate: canvas.tokens has no mask id ({int(canvas.mask_id)}) at a valid position")
    trajectory = None
    if record:
        trajectory = torch.full(tokens.shape, -1, dtype=torch.long, device=tokens.device)  # [B, L]
        offset = 0
        for result, where in phases:
            trajectory = torch.where(where, result.trajectory + offset, trajectory)
            offset += result.steps
    return GenerationResult(
        tokens=tokens,
        trajectory=trajectory,
        steps=sum(r.steps for r, _ in phases),
        forward_passes=sum(r.forward_passes for r, _ in phases),
        num_blocks=sum(r.num_blocks for r, _ in phases),
        cached_forwards=sum(r.cached_forwards for r, _ in phases),
        positions_computed=sum(r.positions_computed for r, _ in phases),
        tokens_scored=sum(r.tokens_scored for r, _ in phases),
    )
