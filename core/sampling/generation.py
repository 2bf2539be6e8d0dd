"""The diffusion sampler engine: turn a canvas of masks into tokens.

Tensor-level on purpose: a task format (``diffuspeech.formats``) builds the canvas and the
per-position tensors of :class:`CanvasSpec`; this module only knows masks, blocks,
schedules and strategies. One step:

1. hidden states of the whole canvas (a doubled batch with classifier-free guidance),
2. the output head **only at the positions that may be revealed now** (still masked, in
   the current block, modality already scheduled), in row chunks so ``[N, vocab]``
   logits stay bounded and ``[B, L, vocab]`` is never built,
3. a candidate id and its confidence per such position from the fused sampling kernel
   (``diffuspeech.sampling.kernels``: Triton on CUDA, PyTorch elsewhere),
4. the strategy (a :class:`~diffuspeech.sampler.Sampler` plugin) picks which candidates to
   commit, separately per modality group so text and speech follow their own schedules,
5. early stop: once a segment's end id is committed at position p, the still-masked rest
   of that segment after p is filled with the segment's fill id.

Steps contain no ``.item()``; the driver loop syncs once per step to skip finished blocks
and stop early, and to report NaN logits.

Reveal counts. Target positions of a row are split, in reading order, into blocks of
``block_length`` (semi-autoregressive decoding; one block by default) and each block gets
``steps / num_blocks`` steps. Within a block each modality group (text incl. special, and
speech) has its own plan: with no scheduler, LLaDA's even split of the block's masked count
over its steps (remainder first); with a :class:`~diffuspeech.scheduler.MaskScheduler`, its
``reveal_counts`` for that modality (e.g. ``per_modality`` with ``speech_delay`` keeps the
speech answer masked while the text thinking is revealed). A group whose plan has not
started yet is not eligible, so no strategy can reveal it early. The count asked of the
strategy is the step's planned count (at most what is still masked): when a strategy
reveals more (threshold) or early stop fills a segment, the block simply finishes sooner
and its remaining steps are skipped.

KV caching (``kv_cache``: ``prefix`` | ``dual``, needs ``block_length``): Fast-dLLM's
approximate cache, see :mod:`diffuspeech.sampling.kv_cache`. The first forward of each block is a
full one that also caches every layer's keys/values; the block's other steps run the
backbone on the block (dual) or the block and the suffix (prefix) only. Backbones without
the capability get full forwards and a warning.

Fix of LLaDA's EOS suppression: LLaDA's ``confidence_eos_eot_inf`` sets EOS to -inf in the
noisy logits *after* sampling, so at temperature > 0 EOS keeps its confidence (LLaDA issue
#137). Here ``defer_ids`` sets the confidence of every candidate in that list to 0 at every
temperature: such tokens are still proposed, and are revealed after all other candidates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..backbone import Backbone
from ..modality import MODALITY_CODE, SPEECH, TEXT
from ..sampler import Sampler
from ..scheduler import MaskScheduler
from .kernels.sampling import resolve_backend, sample_rows
from .kv_cache import BlockForward
from .options import DecodeOptions, GenerationError, check_options

__all__ = ["CanvasSpec", "DecodeOptions", "GenerationError", "GenerationResult", "StepInfo", "diffusion_steps", "even_split_counts", "generate"]

SPECIAL_CODE = MODALITY_CODE["special"]
SPEECH_CODE = MODALITY_CODE[SPEECH]
GROUPS = (TEXT, SPEECH)  # schedule groups: text (special positions go with text) and speech


@dataclass
class CanvasSpec:
    """The canvas and what is known about each position. All tensors are ``[B, L]`` unless noted."""

    tokens: torch.Tensor  # long: fixed ids, and mask_id at every position to generate
    mask_id: int
    valid: Optional[torch.Tensor] = None  # bool, False at padding (never generated or attended); None = all valid
    modality: Optional[torch.Tensor] = None  # long modality codes (MODALITY_CODE); None = all text
    segment: Optional[torch.Tensor] = None  # long target-segment index, -1 at condition/fixed positions; None = one segment
    condition: Optional[torch.Tensor] = None  # bool, positions the unconditional CFG pass masks; None = non-target, non-special
    allowed_lo: Optional[torch.Tensor] = None  # long, first id a position may take; None = 0
    allowed_hi: Optional[torch.Tensor] = None  # long, one past the last allowed id; None = vocab size
    segment_end_id: Optional[torch.Tensor] = None  # [S] or [B, S] long end id per segment, -1 = no early stop
    segment_fill_id: Optional[torch.Tensor] = None  # [S] or [B, S] long id filling a segment after its end; -1 = end id
    attention_mask: Optional[torch.Tensor] = None  # [B, 1, L, L] bool (AttentionPolicy); None = full attention over valid


@dataclass
class StepInfo:
    """Passed to ``on_step`` after every step."""

    step: int  # steps done so far (1-based)
    max_steps: int  # upper bound (early stop and threshold decoding finish sooner)
    block: int  # current block index
    num_blocks: int
    masked: int  # target positions still masked, whole batch
    tokens: torch.Tensor  # [B, L] current canvas (do not modify)


@dataclass
class GenerationResult:
    tokens: torch.Tensor  # [B, L] long, the final canvas
    trajectory: Optional[torch.Tensor]  # [B, L] long step at which each position was revealed, -1 never masked
    steps: int  # denoising steps actually run
    forward_passes: int  # network evaluations: one per step, two with classifier-free guidance (one doubled batch)
    num_blocks: int
    cached_forwards: int = 0  # of forward_passes, those that ran only a block window on the KV cache
    positions_computed: int = 0  # query positions the backbone ran, summed over the rows of every pass
    tokens_scored: int = 0  # positions the output head scored (conditional rows; the CFG pass scores as many again)


def diffusion_steps(opts: DecodeOptions, diffused: torch.Tensor) -> int:
    """The engine's step count for a batch whose ``diffused [B, L]`` positions it fills.

    Without blocks: ``opts.steps``, at most one per target token (e.g. S2T's short answer).
    With ``block_length``: whole steps per block (rounded up), at most one per target token,
    so one config serves tasks of any length."""
    steps = opts.steps
    if opts.block_length is None:
        return max(1, min(steps, int(diffused.sum(dim=1).min())))
    if isinstance(opts.block_length, int) and opts.block_length > 0 and isinstance(steps, int) and steps > 0:
        n_target = max(1, int(diffused.sum(dim=1).max()))
        num_blocks = math.ceil(n_target / opts.block_length)
        return num_blocks * max(1, min(math.ceil(steps / num_blocks), n_target // num_blocks))
    return steps  # invalid values: the engine names the problem


def even_split_counts(num_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """``[B, steps]`` long: LLaDA's split of ``num_masked [B]`` over ``steps``, remainder first."""
    base = (num_masked // steps)[:, None]  # [B, 1]
    rem = (num_masked % steps)[:, None]  # [B, 1]
    return base + (torch.arange(steps, device=num_masked.device)[None, :] < rem).long()  # [B, S]


# --------------------------------------------------------------------------- validation
def _per_position(t: Optional[torch.Tensor], name: str, shape: torch.Size, default: Any, dtype, device) -> torch.Tensor:
    if t is None:
        return torch.full(shape, default, dtype=dtype, device=device)
    if tuple(t.shape) != tuple(shape):
        raise GenerationError(f"canvas.{name} must have the canvas shape {tuple(shape)}, got {tuple(t.shape)}")
    return t.to(device=device, dtype=dtype)


def _per_segment(t: Optional[torch.Tensor], name: str, batch: int, num_segments: int, device) -> Optional[torch.Tensor]:
    if t is None:
        return None
    t = torch.as_tensor(t, dtype=torch.long, device=device)
    if t.dim() == 1:
        t = t[None, :].expand(batch, -1)
    if t.dim() != 2 or t.shape[0] != batch or t.shape[1] < num_segments:
        raise GenerationError(
            f"canvas.{name} must be [S] or [B, S] with one entry per segment (S >= {num_segments}, B = {batch}), "
            f"got {tuple(t.shape)}"
        )
    return t


def _build_sampler(sampler: Sampler | str | dict) -> Sampler:
    if isinstance(sampler, Sampler):
        return sampler
    from ..compose import build_component

    return build_component("samplers", sampler, path="sampler")


# --------------------------------------------------------------------------- plan
def _reveal_plan(
    n_blk: torch.Tensor,  # [B, NB, G] target count per block and group
    steps_per_block: int,
    scheduler: MaskScheduler | None,
) -> torch.Tensor:
    """``[B, NB, G, S]`` long: how many target positions each step of each block plans to reveal."""
    b, nb, g = n_blk.shape
    plans = []
    for gi, name in enumerate(GROUPS[:g]):
        n = n_blk[:, :, gi].reshape(-1)  # [B * NB]
        if scheduler is None:
            counts = even_split_counts(n, steps_per_block)
        else:
            counts = scheduler.reveal_counts(n, steps_per_block, name).to(n.device)
        plans.append(counts.reshape(b, nb, steps_per_block))  # [B, NB, S]
    return torch.stack(plans, dim=2)  # [B, NB, G, S]


# --------------------------------------------------------------------------- engine
@torch.no_grad()
def generate(
    backbone: Backbone,
    canvas: CanvasSpec,
    options: DecodeOptions | None = None,
    *,
    sampler: Sampler | str | dict = "low_confidence",
    scheduler: MaskScheduler | None = None,
    generator: torch.Generator | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
) -> GenerationResult:
    """Fill every ``mask_id`` at a valid position of ``canvas.tokens``; see the module docstring.

    ``sampler`` is a strategy object or a config node / registered name (``low_confidence``,
    ``random``, ``threshold``). ``scheduler`` None means LLaDA's even split per block.
    """
    options = options or DecodeOptions()
    check_options(options)
    strategy = _build_sampler(sampler)
    tokens = canvas.tokens
    if tokens.dim() != 2 or tokens.dtype != torch.long:
        raise GenerationError(f"canvas.tokens must be a [B, L] long tensor, got {tuple(tokens.shape)} {tokens.dtype}")
    bsz, length = tokens.shape
    device = tokens.device
    if length > backbone.max_seq_len:
        raise GenerationError(
            f"canvas length {length} exceeds the backbone's max_seq_len {backbone.max_seq_len}: "
            "shorten the target segments or the condition, or use a backbone configured for longer sequences"
        )
    vocab = backbone.vocab_size
    mask_id = int(canvas.mask_id)
    shape = tokens.shape
    valid = _per_position(canvas.valid, "valid", shape, True, torch.bool, device)
    modality = _per_position(canvas.modality, "modality", shape, MODALITY_CODE[TEXT], torch.long, device)
    target = (tokens == mask_id) & valid  # [B, L]
    segment = torch.where(target, 0, -1) if canvas.segment is None else _per_position(canvas.segment, "segment", shape, -1, torch.long, device)
    lo = _per_position(canvas.allowed_lo, "allowed_lo", shape, 0, torch.long, device)
    hi = _per_position(canvas.allowed_hi, "allowed_hi", shape, vocab, torch.long, device)

    n_target = target.sum(dim=1)  # [B]
    max_target = int(n_target.max()) if bsz else 0
    if max_target == 0:
        raise GenerationError(f"nothing to generate: canvas.tokens has no mask id ({mask_id}) at a valid position")
    if options.steps > max_target:
        raise GenerationError(
            f"steps ({options.steps}) exceeds the number of tokens to generate ({max_target}): "
            f"use at most {max_target} steps"
        )
    if bool((segment[target] < 0).any()):
        raise GenerationError("canvas.segment must be >= 0 at every position to generate (-1 marks fixed positions)")
    bad_range = target & ((lo < 0) | (hi > vocab) | (lo >= hi))
    if bool(bad_range.any()):
        b, p = (int(i) for i in bad_range.nonzero()[0])
        raise GenerationError(
            f"allowed id range [{int(lo[b, p])}, {int(hi[b, p])}) at row {b}, position {p} is empty or outside "
            f"the vocabulary [0, {vocab})"
        )
    if canvas.attention_mask is not None and tuple(canvas.attention_mask.shape) != (bsz, 1, length, length):
        raise GenerationError(
            f"canvas.attention_mask must be [B, 1, L, L] = {(bsz, 1, length, length)}, got {tuple(canvas.attention_mask.shape)}"
        )
    num_segments = int(segment.max()) + 1
    end_id = _per_segment(canvas.segment_end_id, "segment_end_id", bsz, num_segments, device)
    fill_id = _per_segment(canvas.segment_fill_id, "segment_fill_id", bsz, num_segments, device)
    if end_id is not None and fill_id is None:
        fill_id = end_id
    if end_id is not None:
        fill_id = torch.where(fill_id < 0, end_id, fill_id)

    # blocks over target positions in reading order, and the per-group reveal plan
    block_length = options.block_length or max_target
    num_blocks = math.ceil(max_target / block_length)
    if options.steps % num_blocks:
        raise GenerationError(
            f"steps ({options.steps}) must be a multiple of the number of blocks ({num_blocks} = "
            f"ceil({max_target} target tokens / block_length {block_length}))"
        )
    steps_per_block = options.steps // num_blocks
    block_id = torch.where(target, (target.cumsum(dim=1) - 1) // block_length, -1)  # [B, L]
    group = (modality == SPEECH_CODE).long()  # [B, L] 0 text/special, 1 speech
    num_groups = 2 if bool((target & (group == 1)).any()) else 1
    onehot_b = torch.nn.functional.one_hot(block_id.clamp_min(0), num_blocks) * target[..., None]  # [B, L, NB]
    onehot_g = torch.nn.functional.one_hot(group, 2)[..., :num_groups]  # [B, L, G]
    n_blk = torch.einsum("bln,blg->bng", onehot_b.float(), onehot_g.float()).round().long()  # [B, NB, G]
    plan = _reveal_plan(n_blk, steps_per_block, scheduler)  # [B, NB, G, S]
    started = plan.cumsum(dim=-1) > 0  # [B, NB, G, S]: the group's schedule has begun revealing

    # guidance and attention
    use_cfg = options.cfg_scale > 0
    condition = None
    if use_cfg:
        condition = (
            valid & ~target & (segment < 0) & (modality != SPECIAL_CODE)
            if canvas.condition is None
            else _per_position(canvas.condition, "condition", shape, False, torch.bool, device) & ~target
        )
    attn = canvas.attention_mask
    if attn is None and not bool(valid.all()):
        eye = torch.eye(length, dtype=torch.bool, device=device)
        attn = (valid[:, None, None, :] | eye[None, None]).contiguous()  # [B, 1, L, L] padding keys hidden
    if attn is not None and use_cfg:
        attn = torch.cat([attn, attn], dim=0)

    if generator is None and options.seed is not None:
        generator = torch.Generator(device=device).manual_seed(int(options.seed))
    if generator is not None and generator.device.type != device.type:
        raise GenerationError(f"generator is on {generator.device} but the canvas is on {device}: create it on {device}")
    backend = resolve_backend(options.backend, device)
    defer = torch.tensor(list(options.defer_ids), dtype=torch.long, device=device) if options.defer_ids else None
    head_rows = max(1, options.max_logits_bytes // (4 * vocab * (3 if use_cfg else 1)))

    forward = BlockForward(backbone, options.kv_cache, attn, copies=2 if use_cfg else 1)
    scored = torch.zeros((), dtype=torch.long, device=device)
    step = passes = 0
    bar = None
    if options.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=options.steps, desc="denoising", unit="step")
    fixed = _Plan(
        mask_id=mask_id, target=target, block_id=block_id, group=group, num_groups=num_groups, counts=plan,
        started=started, lo=lo, hi=hi, condition=condition, attention=attn, segment=segment,
        end_id=end_id, fill_id=fill_id, defer=defer, positions=torch.arange(length, device=device),
    )
    state = _State(
        tokens=tokens.clone(),
        masked=target.clone(),
        trajectory=torch.full(shape, -1, dtype=torch.long, device=device),
        nan_seen=torch.zeros((), dtype=torch.bool, device=device),
    )
    for blk in range(num_blocks):
        for s in range(steps_per_block):
            if not bool((state.masked & (block_id == blk)).any()):  # block done early (threshold, early stop)
                break
            passes += _denoise_step(
                backbone, forward, strategy, fixed, state, blk, s, step, options, generator, backend, head_rows, scored
            )
            step += 1
            if bool(state.nan_seen):
                raise GenerationError(
                    f"non-finite logits at step {step}: the backbone produced NaN/inf (check the weights, the "
                    "dtype, and that every attention row allows at least one key)"
                )
            if bar is not None:
                bar.update(1)
            if on_step is not None:
                on_step(StepInfo(step, options.steps, blk, num_blocks, int(state.masked.sum()), state.tokens))
    if bar is not None:
        bar.close()
    return GenerationResult(
        tokens=state.tokens,
        trajectory=state.trajectory if options.record_trajectory else None,
        steps=step,
        forward_passes=passes,
        num_blocks=num_blocks,
        cached_forwards=forward.cached_forwards,
        positions_computed=forward.positions_computed,
        tokens_scored=int(scored),
    )


@dataclass
class _Plan:
    """What stays fixed during a generation (all ``[B, L]`` unless noted)."""

    mask_id: int
    target: torch.Tensor  # bool, positions to generate
    block_id: torch.Tensor  # long, block of each target position, -1 elsewhere
    group: torch.Tensor  # long, 0 text/special, 1 speech
    num_groups: int
    counts: torch.Tensor  # [B, NB, G, S] planned reveals per step
    started: torch.Tensor  # [B, NB, G, S] bool, the group's schedule has begun
    lo: torch.Tensor
    hi: torch.Tensor
    condition: Optional[torch.Tensor]  # bool, masked in the unconditional pass; None = no CFG
    attention: Optional[torch.Tensor]  # [B or 2B, 1, L, L] bool
    segment: torch.Tensor
    end_id: Optional[torch.Tensor]  # [B, S]
    fill_id: Optional[torch.Tensor]  # [B, S]
    defer: Optional[torch.Tensor]  # [K] ids revealed last
    positions: torch.Tensor  # [L]


@dataclass
class _State:
    tokens: torch.Tensor  # [B, L]
    masked: torch.Tensor  # [B, L] bool, targets still masked
    trajectory: torch.Tensor  # [B, L] long
    nan_seen: torch.Tensor  # [] bool


def _denoise_step(
    backbone: Backbone,
    forward: BlockForward,
    strategy: Sampler,
    plan: _Plan,
    state: _State,
    blk: int,
    s: int,
    step: int,
    options: DecodeOptions,
    generator: torch.Generator | None,
    backend: str,
    head_rows: int,
    scored: torch.Tensor,
) -> int:
    """One denoising step, updating ``state`` in place; returns the network evaluations spent.

    Tensor work only: no ``.item()`` except the empty-group check with two modality groups."""
    tokens, shape, bsz = state.tokens, state.tokens.shape, state.tokens.shape[0]
    in_block = state.masked & (plan.block_id == blk)  # [B, L]
    eligible, counts = [], []
    for g in range(plan.num_groups):  # who may be revealed now, and how many, per modality group
        in_group = in_block & (plan.group == g)  # [B, L]
        counts.append(torch.minimum(in_group.sum(dim=1), plan.counts[:, blk, g, s]))  # [B]
        eligible.append(in_group & plan.started[:, blk, g, s][:, None])  # [B, L]
    need = eligible[0] if plan.num_groups == 1 else eligible[0] | eligible[1]  # [B, L]
    if plan.num_groups > 1 and not bool(need.any()):  # every group waits on its schedule this step
        return 0

    use_cfg = plan.condition is not None
    inp = torch.cat([tokens, tokens.masked_fill(plan.condition, plan.mask_id)]) if use_cfg else tokens  # [B or 2B, L]
    hidden, window = forward(inp, plan.block_id == blk, blk)  # [B or 2B, W, D], [B or 2B, W] or None (W = L)
    # window positions increase along each row, so the row-major order of need_w is that of need
    need_w = need if window is None else need.gather(1, window[:bsz])  # [B, W]
    h = hidden[:bsz][need_w]  # [N, D]
    hu = hidden[bsz:][need_w] if use_cfg else None  # [N, D]
    scored += need_w.sum()
    wanted = tuple(getattr(strategy, "needs_stats", ()))
    ids, prob, extra = _sample_candidates(
        backbone, h, hu, plan.lo[need], plan.hi[need], options, plan.mask_id, generator, backend, head_rows, bool(wanted)
    )  # [N], [N], {margin, entropy: [N]}
    state.nan_seen |= torch.isnan(prob).any()
    confidence = torch.full(shape, float("-inf"), device=tokens.device).masked_scatter(need, prob)  # [B, L]
    stats = {k: torch.full(shape, float("nan"), device=tokens.device).masked_scatter(need, extra[k]) for k in wanted} or None
    candidate = tokens.masked_scatter(need, ids)  # [B, L]
    if plan.defer is not None:
        confidence = torch.where(need & torch.isin(candidate, plan.defer), 0.0, confidence)

    reveal = torch.zeros_like(need)
    for g in range(plan.num_groups):
        scores = torch.where(eligible[g], confidence, float("-inf"))
        if stats is None:
            reveal |= strategy.select(scores, counts[g], generator) & eligible[g]
        else:
            group_stats = {k: torch.where(eligible[g], v, float("nan")) for k, v in stats.items()}
            reveal |= strategy.select(scores, counts[g], generator, stats=group_stats) & eligible[g]
    state.tokens = torch.where(reveal, candidate, tokens)
    state.masked = state.masked & ~reveal
    if options.record_trajectory:
        state.trajectory.masked_fill_(reveal, step)
    if plan.end_id is not None:
        state.tokens, state.masked, state.trajectory = _early_stop(
            state.tokens, state.masked, state.trajectory, plan.target, plan.segment, plan.end_id, plan.fill_id,
            plan.positions, step, options.record_trajectory,
        )
    return 2 if use_cfg else 1


def _sample_candidates(
    backbone: Backbone,
    h: torch.Tensor,  # [N, D] conditional hidden states
    hu: torch.Tensor | None,  # [N, D] unconditional hidden states (CFG) or None
    lo: torch.Tensor,  # [N]
    hi: torch.Tensor,  # [N]
    options: DecodeOptions,
    mask_id: int,
    generator: torch.Generator | None,
    backend: str,
    head_rows: int,
    with_stats: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Output head + guidance + fused sampling in row chunks: ``(ids [N], prob [N], stats)``;
    ``stats`` holds ``margin``/``entropy`` ``[N]`` when ``with_stats`` (from the same kernel pass)."""
    ids, probs, margins, entropies = [], [], [], []
    for start in range(0, max(1, h.shape[0]), head_rows):
        sl = slice(start, start + head_rows)
        logits = backbone.logits(h[sl])  # [n, V]
        if hu is not None:
            uncond = backbone.logits(hu[sl]).float()  # [n, V]
            logits = uncond + (options.cfg_scale + 1.0) * (logits.float() - uncond)
        out = sample_rows(
            logits, lo[sl], hi[sl], banned_id=mask_id, temperature=options.temperature, generator=generator, backend=backend,
            with_stats=with_stats,
        )
        ids.append(out[0])
        probs.append(out[1])
        if with_stats:
            margins.append(out[2])
            entropies.append(out[3])
    stats = {"margin": torch.cat(margins), "entropy": torch.cat(entropies)} if with_stats else {}
    return torch.cat(ids), torch.cat(probs), stats


def _early_stop(
    tokens: torch.Tensor,  # [B, L]
    masked: torch.Tensor,  # [B, L] bool
    trajectory: torch.Tensor,  # [B, L]
    target: torch.Tensor,  # [B, L] bool
    segment: torch.Tensor,  # [B, L] long, -1 outside targets
    end_id: torch.Tensor,  # [B, S]
    fill_id: torch.Tensor,  # [B, S]
    positions: torch.Tensor,  # [L]
    step: int,
    record: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fill each segment's still-masked positions after its first committed end id."""
    bsz, length = tokens.shape
    seg = segment.clamp_min(0)  # [B, L]
    end_here = end_id.gather(1, seg)  # [B, L]
    is_end = target & ~masked & (segment >= 0) & (end_here >= 0) & (tokens == end_here)  # [B, L]
    first = torch.full((bsz, end_id.shape[1]), length, dtype=torch.long, device=tokens.device)  # [B, S]
    where_end = torch.where(is_end, positions[None, :], length)  # [B, L]
    first = first.scatter_reduce(1, seg, where_end, reduce="amin")  # [B, S]
    fill = masked & (segment >= 0) & (positions[None, :] > first.gather(1, seg))  # [B, L]
    tokens = torch.where(fill, fill_id.gather(1, seg), tokens)
    if record:
        trajectory = trajectory.masked_fill(fill, step)
    return tokens, masked & ~fill, trajectory
