"""Fused "pick an id and its probability" for rows of logits.

For every row of ``logits [N, V]`` this returns the chosen id (the argmax of the logits,
or of ``logits + temperature * Gumbel noise`` when ``temperature > 0``) and the softmax
probability of that id under the *clean* logits, restricted to the row's allowed id range
``[lo, hi)`` with ``banned_id`` (the mask id) excluded. That is exactly what a masked
diffusion sampler needs per still-masked position (the candidate and its confidence).

Two interchangeable backends:

- ``triton`` (``sampling_triton.py``): one pass over each row, online max / sum-exp,
  Gumbel noise generated in the kernel (Philox ``tl.rand``) from a seed held in a device
  tensor; reads the bf16 logits once and writes 12 bytes per row. No softmax, no float64
  noise, no host sync. Used automatically for CUDA tensors when Triton is installed.
- ``torch``: the same maths in float32 PyTorch, processed in row chunks so memory stays
  bounded. Used everywhere else.

Gumbel-max in log space: ``argmax(l + T * g)`` with ``g = -log(E)`` and ``E = -log(1 - v)``,
``v ~ U[0, 1)``. It equals LLaDA's ``argmax(exp(l) / (-log U) ** T)``; computing ``E`` from a
uniform near 0 keeps the large-``g`` tail (which decides the max) at full float32 resolution.
"""

from __future__ import annotations

import os

import torch

from ..options import SAMPLING_BACKENDS

FORCE_ENV = "DIFFUSPEECH_SAMPLING_BACKEND"  # overrides "auto": triton | torch

_V_MIN = 2.3e-10  # half the resolution of a 31-bit uniform: keeps -log(E) finite


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken triton install means "not available"
        return False
    return True


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_backend(backend: str, device: torch.device) -> str:
    """Pick ``"triton"`` or ``"torch"`` for tensors on ``device``.

    ``auto`` (the default) means Triton on CUDA when installed, PyTorch elsewhere; the
    environment variable ``DIFFUSPEECH_SAMPLING_BACKEND`` overrides ``auto``. Forcing
    ``triton`` on a CPU tensor works only under ``TRITON_INTERPRET=1`` (tests do this).
    """
    if backend not in SAMPLING_BACKENDS:
        raise ValueError(f"unknown sampling backend {backend!r}; valid choices: {', '.join(SAMPLING_BACKENDS)}")
    if backend == "auto":
        forced = os.environ.get(FORCE_ENV, "").strip().lower()
        if forced:
            if forced not in ("triton", "torch"):
                raise ValueError(f"{FORCE_ENV}={forced!r}: valid values are triton, torch")
            backend = forced
        else:
            return "triton" if device.type == "cuda" and triton_available() else "torch"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("sampling backend 'triton' was requested but triton is not installed; use 'torch'")
        if device.type != "cuda" and not _interpreting():
            raise RuntimeError(
                f"sampling backend 'triton' needs CUDA tensors (got {device}); set TRITON_INTERPRET=1 "
                "before importing triton to run the kernel on CPU, or use backend 'torch'"
            )
    return backend


def gumbel_from_uniform(v: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log(1 - v))`` from ``v ~ U[0, 1)`` (float32, accurate tail)."""
    return -torch.log(-torch.log1p(-v.clamp_min(_V_MIN)))  # log1p keeps small v (the large-g tail) exact


def _check_args(logits: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, temperature: float) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, V], got shape {tuple(logits.shape)}")
    n = logits.shape[0]
    if lo.shape != (n,) or hi.shape != (n,):
        raise ValueError(f"lo and hi must be [N] = [{n}], got {tuple(lo.shape)} and {tuple(hi.shape)}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")


def sample_rows_torch(
    logits: torch.Tensor,  # [N, V] any float dtype
    lo: torch.Tensor,  # [N] long: first allowed id
    hi: torch.Tensor,  # [N] long: one past the last allowed id
    *,
    banned_id: int = -1,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    max_chunk_bytes: int = 256 << 20,
    with_stats: bool = False,
) -> tuple[torch.Tensor, ...]:
    """PyTorch backend of :func:`sample_rows`; returns ``(ids [N] long, prob [N] float32)`` and,
    ``with_stats``, ``margin [N]`` and ``entropy [N]``."""
    _check_args(logits, lo, hi, temperature)
    n, v = logits.shape
    ids = torch.empty(n, dtype=torch.long, device=logits.device)
    prob = torch.empty(n, dtype=torch.float32, device=logits.device)
    margin = torch.empty(n if with_stats else 0, dtype=torch.float32, device=logits.device)
    entropy = torch.empty(n if with_stats else 0, dtype=torch.float32, device=logits.device)
    rows = max(1, max_chunk_bytes // max(1, 4 * v * (2 if temperature > 0 else 1)))
    cols = torch.arange(v, device=logits.device)  # [V]
    restricted = bool((lo > 0).any() or (hi < v).any())  # one host sync: skip the range mask when unused
    for start in range(0, n, rows):
        sl = slice(start, min(n, start + rows))
        x = logits[sl].to(torch.float32, copy=True)  # [n, V] own buffer: the input is never modified
        if 0 <= banned_id < v:
            x[:, banned_id] = float("-inf")
        if restricted:
            x.masked_fill_((cols[None, :] < lo[sl, None]) | (cols[None, :] >= hi[sl, None]), float("-inf"))
        lse = torch.logsumexp(x, dim=-1)  # [n]
        if temperature > 0:
            g = torch.rand(x.shape, dtype=torch.float32, device=x.device, generator=generator)
            g.clamp_(min=_V_MIN).neg_().log1p_().neg_().log_().neg_()  # Gumbel, in place: -log(-log1p(-v))
            choice = torch.argmax(g.mul_(temperature).add_(x), dim=-1)  # [n]
            del g
        else:
            choice = torch.argmax(x, dim=-1)  # [n]
        ids[sl] = choice
        prob[sl] = torch.exp(x.gather(1, choice[:, None]).squeeze(1) - lse)
        if with_stats:
            margin[sl], entropy[sl] = _stats(x, lse)
    return (ids, prob, margin, entropy) if with_stats else (ids, prob)


def _stats(x: torch.Tensor, lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [n, V]`` float32 logits (-inf where not allowed), ``lse [n]`` -> ``(margin [n], entropy [n])``."""
    top = torch.topk(x, k=min(2, x.shape[1]), dim=-1).values  # [n, 2]
    second = top[:, 1] if top.shape[1] > 1 else torch.full_like(lse, float("-inf"))
    margin = torch.exp(top[:, 0] - lse) - torch.exp(second - lse)  # [n] top-1 minus top-2 probability
    d = x - lse[:, None]  # [n, V] log-probabilities (-inf where not allowed)
    p = torch.exp(d)  # [n, V]
    return margin, -torch.where(p > 0, p * d, 0.0).sum(dim=-1)  # entropy = -sum p log p, per element: no cancellation


def sample_rows(
    logits: torch.Tensor,  # [N, V] any float dtype (bf16 on GPU)
    lo: torch.Tensor | None = None,  # [N] long; None = 0
    hi: torch.Tensor | None = None,  # [N] long; None = V
    *,
    banned_id: int = -1,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    backend: str = "auto",
    with_stats: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Chosen id ``[N] long`` and its softmax probability ``[N] float32`` for each row; with
    ``with_stats`` also the top-1 minus top-2 probability ``margin [N]`` and the ``entropy [N]``
    (nats) of the clean softmax over the allowed ids, from the same pass.

    Ids outside ``[lo, hi)`` and ``banned_id`` are never chosen and do not count in the
    softmax. At ``temperature == 0`` the choice is the first argmax (like ``torch.argmax``)
    on every backend. Non-finite logits give a NaN probability (callers check for it).
    ``generator`` seeds the noise: the Triton kernel draws one seed from it per call as a
    device tensor, so no host sync happens.
    """
    n, v = logits.shape if logits.dim() == 2 else (0, 0)
    if lo is None:
        lo = torch.zeros(n, dtype=torch.long, device=logits.device)
    if hi is None:
        hi = torch.full((n,), v, dtype=torch.long, device=logits.device)
    _check_args(logits, lo, hi, temperature)
    if resolve_backend(backend, logits.device) == "triton":
        from .sampling_triton import sample_rows_triton

        return sample_rows_triton(
            logits, lo, hi, banned_id=banned_id, temperature=temperature, generator=generator, with_stats=with_stats
        )
    return sample_rows_torch(logits, lo, hi, banned_id=banned_id, temperature=temperature, generator=generator, with_stats=with_stats)
