"""Batched k-means in torch: fitting (k-means++ then Lloyd) and nearest-centroid assignment.

Runs on any device. Distances are ``||x||^2 - 2 x.c + ||c||^2`` computed in row chunks so
memory stays ``O(chunk * K)``; the ``||x||^2`` term does not change the argmin and is only
added where the distance itself is needed (inertia, k-means++ weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

__all__ = ["KMeansResult", "fit_kmeans", "kmeans_plus_plus", "nearest_centroid", "squared_distances"]


def squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """``[N, D] x [K, D] -> [N, K]`` squared Euclidean distances (clamped at 0)."""
    d = (x * x).sum(1, keepdim=True) - 2.0 * (x @ centroids.T) + (centroids * centroids).sum(1)[None, :]
    return d.clamp_min_(0.0)


def _assign(x: torch.Tensor, centroids: torch.Tensor, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [N, D]`` -> (nearest ids ``[N]`` long, squared distance to it ``[N]``)."""
    c_sq = (centroids * centroids).sum(1)  # [K]
    ids = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dist = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], chunk_size):
        xb = x[start : start + chunk_size]  # [n, D]
        partial = c_sq[None, :] - 2.0 * (xb @ centroids.T)  # [n, K]
        best, idx = partial.min(dim=1)
        ids[start : start + chunk_size] = idx
        dist[start : start + chunk_size] = (best + (xb * xb).sum(1)).clamp_min(0.0)
    return ids, dist


@torch.no_grad()
def nearest_centroid(x: torch.Tensor, centroids: torch.Tensor, chunk_size: int = 16384) -> torch.Tensor:
    """Index of the nearest centroid for every vector: ``[..., D]`` -> ``[...]`` long.

    ``centroids`` is ``[K, D]``; it is moved to ``x``'s device and dtype.
    """
    if x.shape[-1] != centroids.shape[-1]:
        raise ValueError(
            f"feature dimension {x.shape[-1]} does not match the centroids' dimension {centroids.shape[-1]}"
        )
    flat = x.reshape(-1, x.shape[-1])  # [N, D]
    c = centroids.to(device=flat.device, dtype=flat.dtype)
    ids, _ = _assign(flat, c, chunk_size)
    return ids.reshape(x.shape[:-1])


@torch.no_grad()
def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): ``[N, D]`` -> ``[k, D]``."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator, device="cpu"))
    centroids = torch.empty(k, x.shape[1], dtype=x.dtype, device=x.device)
    centroids[0] = x[first]
    closest = ((x - x[first]) ** 2).sum(1)  # [N] squared distance to the nearest chosen centroid
    for i in range(1, k):
        total = closest.sum()
        if float(total) <= 0.0:  # fewer distinct points than k: pick uniformly
            idx = int(torch.randint(n, (1,), generator=generator, device="cpu"))
        else:
            probs = (closest / total).double().cpu()
            idx = int(torch.multinomial(probs, 1, generator=generator))
        centroids[i] = x[idx]
        closest = torch.minimum(closest, ((x - x[idx]) ** 2).sum(1))
    return centroids


@dataclass
class KMeansResult:
    centroids: torch.Tensor  # [K, D]
    inertia: float  # sum of squared distances to the assigned centroid
    iterations: int  # Lloyd iterations run
    counts: torch.Tensor  # [K] points per cluster at the end


@torch.no_grad()
def fit_kmeans(
    x: torch.Tensor,
    k: int,
    iters: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    init: torch.Tensor | None = None,
    reseed_empty: bool = True,
    chunk_size: int = 16384,
    progress: bool | str = False,
) -> KMeansResult:
    """Fit ``k`` centroids to ``x [N, D]`` with Lloyd's algorithm.

    ``init``: starting centroids ``[k, D]`` (default: k-means++ with ``seed``). Stops after
    ``iters`` iterations or when the inertia improves by less than ``tol`` (relative). An
    empty cluster is re-seeded with the point farthest from its centroid (``reseed_empty``).
    ``progress``: show a tqdm bar (a string is used as its description).
    """
    if x.dim() != 2:
        raise ValueError(f"k-means expects features of shape [N, D], got {tuple(x.shape)}")
    n = x.shape[0]
    if k < 1:
        raise ValueError(f"number of clusters must be >= 1, got {k}")
    if n < k:
        raise ValueError(f"cannot fit {k} clusters to {n} feature vectors: give more audio or fewer units")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("k-means features contain NaN or infinite values")
    x = x.float()
    generator = torch.Generator().manual_seed(seed)
    if init is not None:
        if tuple(init.shape) != (k, x.shape[1]):
            raise ValueError(f"init centroids must have shape {(k, x.shape[1])}, got {tuple(init.shape)}")
        centroids = init.to(device=x.device, dtype=x.dtype).clone()
    else:
        centroids = kmeans_plus_plus(x, k, generator)

    bar = tqdm(total=iters, desc=progress if isinstance(progress, str) else "k-means", disable=not progress, unit="it")
    prev = float("inf")
    inertia = float("inf")
    it = 0
    counts = torch.zeros(k, device=x.device)
    for it in range(1, iters + 1):  # noqa: B007 - `it` (iterations run) is reported after the loop
        ids, dist = _assign(x, centroids, chunk_size)
        inertia = float(dist.sum())
        counts = torch.bincount(ids, minlength=k).to(x.dtype)  # [K]
        sums = torch.zeros_like(centroids).index_add_(0, ids, x)  # [K, D]
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        empty = (~filled).nonzero().flatten()
        if reseed_empty and empty.numel():
            far = dist.topk(min(empty.numel(), n)).indices  # the worst-served points
            centroids[empty[: far.numel()]] = x[far]
        bar.update(1)
        bar.set_postfix(inertia=f"{inertia:.4g}", empty=int(empty.numel()))
        if empty.numel() == 0 and prev < float("inf") and prev - inertia <= tol * max(prev, 1e-12):
            break
        prev = inertia
    bar.close()
    ids, dist = _assign(x, centroids, chunk_size)
    return KMeansResult(centroids, float(dist.sum()), it, torch.bincount(ids, minlength=k))
