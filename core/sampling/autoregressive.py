"""Autoregressive decoding of a canvas: the causal, same-size baseline of the diffusion engine.

Tensor-level like :mod:`diffuspeech.sampling.generation` and on the same :class:`CanvasSpec`: every
``mask_id`` at a valid position is a target, filled strictly left to right, one token per
row per forward pass. The token at target position p is chosen from the logits of the
hidden state at p-1 (next-token prediction; the model must have been trained with
``objective.name: autoregressive`` under a causal attention policy, or ``hybrid`` for its
text), restricted to
``[allowed_lo, allowed_hi)`` with the mask id excluded: argmax at temperature 0, Gumbel-max
at ``temperature`` otherwise (seeded), through the same sampling kernel as the engine.

Rows advance together: each pass fills the next still-masked target of every unfinished row,
so rows whose conditions differ in length need no alignment. Early stop per segment: once a
segment's end id is produced, the rest of that segment is filled with its fill id and never
computed; a row whose targets are all filled drops out of the passes.

KV cache: under a causal mask a position's keys and values depend only on the tokens at and
before it, so caching them is exact (up to float rounding). With a backbone that has the
capability of :mod:`diffuspeech.sampling.kv_cache`, the first pass is a full forward that fills the
cache and each later pass runs only the positions whose tokens changed since (normally just
the token produced by the previous pass; the start token of the next segment as well after
an early stop). Other backbones get a full forward per pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch

from ..attention import sees_only_past, states_before
from ..backbone import Backbone, KVCache, supports_kv_cache
from .generation import CanvasSpec, GenerationResult, StepInfo, _per_position, _per_segment
from .kernels.sampling import resolve_backend, sample_rows
from .options import SAMPLING_BACKENDS, GenerationError

__all__ = ["ARDecodeOptions", "ar_decode"]


@dataclass
class ARDecodeOptions:
    temperature: float = 0.0  # Gumbel-max temperature; 0 = greedy argmax
    seed: Optional[int] = None  # seeds a generator on the canvas device when none is passed
    backend: str = "auto"  # sampling kernel: auto (Triton on CUDA, torch elsewhere) | triton | torch
    kv_cache: bool = True  # exact causal KV cache when the backbone supports it; False = a full forward per pass
    record_trajectory: bool = False  # return [B, L] pass index at which each target was filled
    progress: bool = False  # tqdm bar over passes


def _check(backbone: Backbone, canvas: CanvasSpec, options: ARDecodeOptions) -> None:
    tokens = canvas.tokens
    if tokens.dim() != 2 or tokens.dtype != torch.long:
        raise GenerationError(f"canvas.tokens must be a [B, L] long tensor, got {tuple(tokens.shape)} {tokens.dtype}")
    if tokens.shape[1] > backbone.max_seq_len:
        raise GenerationError(
            f"canvas length {tokens.shape[1]} exceeds the backbone's max_seq_len {backbone.max_seq_len}: "
            "shorten the target segments or the condition"
        )
    if not options.temperature >= 0:  # also rejects NaN
        raise GenerationError(f"temperature must be >= 0 (0 = greedy), got {options.temperature}")
    if options.backend not in SAMPLING_BACKENDS:
        raise GenerationError(f"unknown sampling backend {options.backend!r}; valid choices: {', '.join(SAMPLING_BACKENDS)}")
    mask = canvas.attention_mask
    b, length = tokens.shape
    if mask is None or tuple(mask.shape) != (b, 1, length, length):
        raise GenerationError(
            f"autoregressive decoding needs canvas.attention_mask [B, 1, L, L] = {(b, 1, length, length)} from a causal "
            f"(or hybrid) attention policy, got {None if mask is None else tuple(mask.shape)}"
        )


class _Forward:
    """Hidden states at ``prev [B]`` per row: full forwards, or windows on an exact causal KV cache."""

    def __init__(self, backbone: Backbone, attention: torch.Tensor, use_cache: bool) -> None:
        self.backbone, self.attention = backbone, attention  # [B, 1, L, L]
        self.use_cache = use_cache and supports_kv_cache(backbone)
        self.cache: Optional[KVCache] = None
        self.fresh: Optional[torch.Tensor] = None  # [B] positions before this have exact cached keys/values
        self.passes = self.cached = self.positions = 0

    def __call__(self, tokens: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        """``tokens [B, L]``, ``nxt [B]`` (position to predict; L for finished rows) -> ``[B, D]`` at ``nxt - 1``."""
        bsz, length = tokens.shape
        prev = (nxt - 1).clamp(0, length - 1)  # [B]
        rows = torch.arange(bsz, device=tokens.device)  # [B]
        self.passes += 1
        if not self.use_cache or self.cache is None:
            if self.use_cache:
                hidden, self.cache = self.backbone.hidden_states_and_cache(tokens, self.attention)  # [B, L, D]
            else:
                hidden = self.backbone.hidden_states(tokens, self.attention)  # [B, L, D]
            self.positions += bsz * length
            self.fresh = nxt.clamp(max=length - 1)  # tokens from nxt on are still masks in the cache
            return hidden[rows, prev]  # [B, D]
        # recompute the positions whose tokens changed since the cache saw them: [fresh, nxt - 1]
        span = torch.where(nxt < length, nxt - self.fresh, 0)  # [B]
        width = max(1, int(span.max()))  # one host sync per pass
        start = (nxt.clamp(max=length) - width).clamp(0, length - width)  # [B]; earlier starts recompute exact positions again
        window = start[:, None] + torch.arange(width, device=tokens.device)[None, :]  # [B, W]
        hidden = self.backbone.hidden_states_cached(tokens.gather(1, window), window, self.cache, self.attention)  # [B, W, D]
        self.cached += 1
        self.positions += bsz * width
        self.fresh = nxt.clamp(max=length - 1)
        return hidden[rows, (prev - start).clamp(0, width - 1)]  # [B, D]


@torch.no_grad()
def ar_decode(
    backbone: Backbone,
    canvas: CanvasSpec,
    options: ARDecodeOptions | None = None,
    *,
    generator: torch.Generator | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    only: torch.Tensor | None = None,
) -> GenerationResult:
    """Fill every ``mask_id`` at a valid position of ``canvas.tokens`` left to right (module docstring).

    ``only`` (``[B, L]`` bool) restricts the targets to those positions; other masks stay masks
    (TtT's hybrid decoding fills text this way, then denoises speech with the engine).

    Returns the engine's :class:`GenerationResult`: ``steps`` = ``forward_passes`` = passes run
    (the longest row's generated count, early-stopped fills excluded), ``num_blocks`` = the
    largest target count (every token is its own block), ``trajectory`` = pass index per target.
    """
    options = options or ARDecodeOptions()
    _check(backbone, canvas, options)
    tokens = canvas.tokens.clone()  # [B, L]
    bsz, length = tokens.shape
    device, shape, mask_id = tokens.device, tokens.shape, int(canvas.mask_id)
    valid = _per_position(canvas.valid, "valid", shape, True, torch.bool, device)
    pending = (tokens == mask_id) & valid  # [B, L] targets not filled yet
    if not bool(pending.any()):
        raise GenerationError(f"nothing to generate: canvas.tokens has no mask id ({mask_id}) at a valid position")
    if bool(pending[:, 0].any()):
        raise GenerationError("canvas position 0 is a target: autoregressive decoding needs a fixed token before every target")
    if only is not None:
        pending &= _per_position(only, "only", shape, True, torch.bool, device)
        if not bool(pending.any()):
            raise GenerationError("nothing to generate: no mask id at a valid position selected by `only`")
    if bool((states_before(pending) & ~sees_only_past(canvas.attention_mask.to(device))).any()):
        raise GenerationError(
            "autoregressive decoding needs an attention mask under which the state before each target sees no later "
            "position: set attention.name=causal (objective.name=autoregressive) or hybrid (objective.name=hybrid), "
            "or decode with the diffusion mode"
        )
    segment = torch.where(pending, 0, -1) if canvas.segment is None else _per_position(canvas.segment, "segment", shape, -1, torch.long, device)
    if bool((segment[pending] < 0).any()):
        raise GenerationError("canvas.segment must be >= 0 at every position to generate (-1 marks fixed positions)")
    vocab = backbone.vocab_size
    lo = _per_position(canvas.allowed_lo, "allowed_lo", shape, 0, torch.long, device)  # [B, L]
    hi = _per_position(canvas.allowed_hi, "allowed_hi", shape, vocab, torch.long, device)  # [B, L]
    if bool((pending & ((lo < 0) | (hi > vocab) | (lo >= hi))).any()):
        raise GenerationError(f"an allowed id range [allowed_lo, allowed_hi) at a target is empty or outside [0, {vocab})")
    num_segments = int(segment.max()) + 1
    end_id = _per_segment(canvas.segment_end_id, "segment_end_id", bsz, num_segments, device)  # [B, S] or None
    fill_id = _per_segment(canvas.segment_fill_id, "segment_fill_id", bsz, num_segments, device)
    if end_id is not None:
        fill_id = end_id if fill_id is None else torch.where(fill_id < 0, end_id, fill_id)

    if generator is None and options.seed is not None:
        generator = torch.Generator(device=device).manual_seed(int(options.seed))
    backend = resolve_backend(options.backend, device)
    forward = _Forward(backbone, canvas.attention_mask.to(device), options.kv_cache)
    positions = torch.arange(length, device=device)  # [L]
    trajectory = torch.full(shape, -1, dtype=torch.long, device=device)  # [B, L]
    max_target = int(pending.sum(dim=1).max())
    bar = None
    if options.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_target, desc="decoding (autoregressive)", unit="token")
    step = scored = 0
    while True:
        active = pending.any(dim=1)  # [B]
        if not bool(active.any()):  # one host sync per pass
            break
        nxt = torch.where(pending, positions, length).amin(dim=1)  # [B] next target per row; L when done
        at = nxt.clamp(max=length - 1)  # [B] a valid index for gathers
        h = forward(tokens, nxt)  # [B, D] hidden state at nxt - 1
        rows = active.nonzero().squeeze(1)  # [A]
        scored += rows.numel()
        logits = backbone.logits(h[rows])  # [A, V]
        ids, prob = sample_rows(
            logits, lo[rows, at[rows]], hi[rows, at[rows]], banned_id=mask_id,
            temperature=options.temperature, generator=generator, backend=backend,
        )  # [A], [A]
        if bool(torch.isnan(prob).any()):
            raise GenerationError(f"non-finite logits at pass {step + 1}: check the weights and the dtype")
        tokens[rows, at[rows]] = ids
        pending[rows, at[rows]] = False
        trajectory[rows, at[rows]] = step
        if end_id is not None:
            seg = segment[rows, at[rows]]  # [A]
            end = end_id[rows, seg]  # [A]
            stop = torch.zeros(bsz, dtype=torch.bool, device=device).index_fill_(0, rows[(end >= 0) & (ids == end)], True)  # [B]
            seg_b = segment.gather(1, at[:, None]).squeeze(1)  # [B] segment of each row's current position
            fill = pending & stop[:, None] & (segment == seg_b[:, None])  # [B, L] the rest of the ended segment
            tokens = torch.where(fill, fill_id.gather(1, seg_b.clamp_min(0)[:, None]), tokens)
            pending &= ~fill
            trajectory.masked_fill_(fill, step)
        step += 1
        if bar is not None:
            bar.update(1)
        if on_step is not None:
            on_step(StepInfo(step, max_target, step - 1, max_target, int(pending.sum()), tokens))
    if bar is not None:
        bar.close()
    return GenerationResult(
        tokens=tokens,
        trajectory=trajectory if options.record_trajectory else None,
        steps=step,
        forward_passes=forward.passes,
        num_blocks=max_target,
        cached_forwards=forward.cached,
        positions_computed=forward.positions,
        tokens_scored=scored,
    )
