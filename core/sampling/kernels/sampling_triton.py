"""Triton backend of ``sample_rows``: one pass over each row of logits.

One program per row walks the allowed id range ``[lo, hi)`` in chunks of ``BLOCK_V``
ids, keeping in registers the running max and sum of exponentials (online softmax) and
the best score so far with its id and clean logit (and, with ``WITH_STATS``, the two largest
clean logits and the running sum of ``exp(x - max) * (x - max)``: the top-2 margin and the
entropy, at no extra read of the logits; both stay relative to the running max, so large
logits lose no precision). Gumbel noise is drawn in the kernel
with Philox (``tl.rand``) from a seed read from a device tensor, at offset
``row * V + id``, so results are reproducible for a given seed and no host sync happens.
Only chunks overlapping ``[lo, hi)`` are read: a speech-only row reads 500 ids, not 127k.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Globals read inside a @triton.jit kernel must be tl.constexpr: a plain Python float works under
# TRITON_INTERPRET=1 but is a NameError when the kernel is really compiled for the GPU
# (tests/test_kernels_compile.py compiles every variant for sm_80 / sm_90 to catch this).
_V_SMALL = tl.constexpr(1e-3)  # below this, -log(1 - v) is computed by its series v + v^2/2 (no log1p here)
_V_MIN = tl.constexpr(2.3e-10)  # must match sampling.py


@triton.jit
def _sample_rows_kernel(
    logits_ptr,  # [N, V]
    stride_row,
    lo_ptr,  # [N] int64
    hi_ptr,  # [N] int64
    seed_ptr,  # [1] int64
    ids_ptr,  # [N] int64 out
    prob_ptr,  # [N] float32 out
    margin_ptr,  # [N] float32 out (WITH_STATS): top-1 minus top-2 probability of the clean logits
    entropy_ptr,  # [N] float32 out (WITH_STATS): entropy (nats) of the clean softmax
    V,
    banned_id,
    temperature,
    USE_NOISE: tl.constexpr,
    WITH_STATS: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    lo = tl.load(lo_ptr + row)
    hi = tl.minimum(tl.load(hi_ptr + row), V)
    lo = tl.maximum(lo, 0)
    base = logits_ptr + row * stride_row
    lanes = tl.arange(0, BLOCK_V)
    neg_inf = float("-inf")

    run_max = tl.full((), neg_inf, tl.float32)
    run_sum = tl.zeros((), tl.float32)
    best_score = tl.full((), neg_inf, tl.float32)
    best_clean = tl.full((), neg_inf, tl.float32)
    best_id = lo
    run_sd = tl.zeros((), tl.float32)  # sum exp(x - run_max) * (x - run_max) (WITH_STATS: entropy = log S - run_sd / S)
    top1 = tl.full((), neg_inf, tl.float32)  # the two largest clean logits (WITH_STATS: margin)
    top2 = tl.full((), neg_inf, tl.float32)
    if USE_NOISE:
        seed = tl.load(seed_ptr)

    start = lo - lo % BLOCK_V
    while start < hi:
        cols = start + lanes  # [BLOCK_V] int64
        ok = (cols >= lo) & (cols < hi) & (cols != banned_id)
        x = tl.load(base + cols, mask=ok, other=neg_inf).to(tl.float32)

        # online softmax statistics
        new_max = tl.maximum(run_max, tl.max(x, axis=0))
        safe_max = tl.where(new_max == neg_inf, 0.0, new_max)
        scale = tl.exp(run_max - safe_max)
        ex = tl.where(ok, tl.exp(x - safe_max), 0.0)
        if WITH_STATS:  # rescale to the new max: sum e^(x-m')(x-m') = e^(m-m') (sum e^(x-m)(x-m) + (m-m') S)
            moved = tl.where(run_sum > 0, scale * (run_sd + (run_max - safe_max) * run_sum), 0.0)
            run_sd = moved + tl.sum(tl.where(ok, ex * (x - safe_max), 0.0), axis=0)
            c1 = tl.max(x, axis=0)
            c1_arg = tl.argmax(x, axis=0)
            c2 = tl.max(tl.where(lanes == c1_arg, neg_inf, x), axis=0)
            top2 = tl.maximum(tl.maximum(top2, c2), tl.minimum(top1, c1))
            top1 = tl.maximum(top1, c1)
        run_sum = run_sum * scale + tl.sum(ex, axis=0)
        run_max = new_max

        # the candidate: argmax of x (+ temperature * Gumbel)
        if USE_NOISE:
            v = tl.maximum(tl.rand(seed, row * V + cols), _V_MIN)
            e = tl.where(v < _V_SMALL, v * (1.0 + 0.5 * v), -tl.log(1.0 - v))
            score = tl.where(ok, x - temperature * tl.log(e), neg_inf)
        else:
            score = x
        chunk_best = tl.max(score, axis=0)
        chunk_arg = tl.argmax(score, axis=0)
        chunk_clean = tl.max(tl.where(lanes == chunk_arg, x, neg_inf), axis=0)
        take = chunk_best > best_score  # strict: the earlier chunk wins ties, like torch.argmax
        best_id = tl.where(take, start + chunk_arg, best_id)
        best_clean = tl.where(take, chunk_clean, best_clean)
        best_score = tl.where(take, chunk_best, best_score)
        start += BLOCK_V

    tl.store(ids_ptr + row, best_id)
    tl.store(prob_ptr + row, tl.exp(best_clean - run_max) / run_sum)
    if WITH_STATS:
        tl.store(margin_ptr + row, (tl.exp(top1 - run_max) - tl.exp(top2 - run_max)) / run_sum)
        tl.store(entropy_ptr + row, tl.log(run_sum) - run_sd / run_sum)


def sample_rows_triton(
    logits: torch.Tensor,  # [N, V]
    lo: torch.Tensor,  # [N] long
    hi: torch.Tensor,  # [N] long
    *,
    banned_id: int = -1,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    block_v: int | None = None,
    with_stats: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Launch the kernel; returns ``(ids [N] long, prob [N] float32)`` and, ``with_stats``,
    ``margin [N]`` and ``entropy [N]`` float32 from the same pass over the logits."""
    n, v = logits.shape
    device = logits.device
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    ids = torch.empty(n, dtype=torch.long, device=device)
    prob = torch.empty(n, dtype=torch.float32, device=device)
    margin = torch.empty(n if with_stats else 1, dtype=torch.float32, device=device)
    entropy = torch.empty(n if with_stats else 1, dtype=torch.float32, device=device)
    if n == 0:
        return (ids, prob, margin, entropy) if with_stats else (ids, prob)
    use_noise = temperature > 0
    if use_noise:
        gen_device = generator.device if generator is not None else device
        seed = torch.randint(0, 2**31 - 1, (1,), generator=generator, device=gen_device).to(device)
    else:
        seed = torch.zeros(1, dtype=torch.long, device=device)
    if block_v is None:
        block_v = 4096 if device.type == "cuda" else min(1024, triton.next_power_of_2(v))
    _sample_rows_kernel[(n,)](
        logits,
        logits.stride(0),
        lo.to(device=device, dtype=torch.long).contiguous(),
        hi.to(device=device, dtype=torch.long).contiguous(),
        seed,
        ids,
        prob,
        margin,
        entropy,
        v,
        banned_id,
        float(temperature),
        USE_NOISE=use_noise,
        WITH_STATS=with_stats,
        BLOCK_V=block_v,
        num_warps=8 if device.type == "cuda" else 1,
    )
    return (ids, prob, margin, entropy) if with_stats else (ids, prob)
