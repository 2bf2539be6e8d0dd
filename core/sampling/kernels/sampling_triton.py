"""Triton backend of ``sample_rows``: one pass over each row of logits.

One program per row walks the allowed id range ``[lo, hi)`` in chunks of ``BLOCK_V``
ids, keeping in registers the running max and sum of exponentials (online softmax) and
the best score so far with its id and clean logit. Gumbel noise is drawn in the kernel
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
    V,
    banned_id,
    temperature,
    USE_NOISE: tl.constexpr,
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
        run_sum = run_sum * tl.exp(run_max - safe_max) + tl.sum(tl.where(ok, tl.exp(x - safe_max), 0.0), axis=0)
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


def sample_rows_triton(
    logits: torch.Tensor,  # [N, V]
    lo: torch.Tensor,  # [N] long
    hi: torch.Tensor,  # [N] long
    *,
    banned_id: int = -1,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    block_v: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the kernel; returns ``(ids [N] long, prob [N] float32)``."""
    n, v = logits.shape
    device = logits.device
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    ids = torch.empty(n, dtype=torch.long, device=device)
    prob = torch.empty(n, dtype=torch.float32, device=device)
    if n == 0:
        return ids, prob
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
        v,
        banned_id,
        float(temperature),
        USE_NOISE=use_noise,
        BLOCK_V=block_v,
        num_warps=8 if device.type == "cuda" else 1,
    )
    return ids, prob
