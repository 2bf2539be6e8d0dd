"""core/kmeans.py against scipy's k-means (an independent implementation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.cluster.vq import kmeans2, vq

from diffuspeech.kmeans import fit_kmeans, kmeans_plus_plus, nearest_centroid, squared_distances


def test_nearest_centroid_matches_scipy_vq():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 300, 16, generator=g)  # [B, T, D]
    c = torch.randn(37, 16, generator=g)
    ids = nearest_centroid(x, c, chunk_size=64)  # several chunks
    ref, _ = vq(x.reshape(-1, 16).double().numpy(), c.double().numpy())
    assert ids.shape == (2, 300) and ids.dtype == torch.long
    assert np.array_equal(ids.reshape(-1).numpy(), ref)
    with pytest.raises(ValueError, match="feature dimension 16 does not match the centroids' dimension 8"):
        nearest_centroid(x, torch.randn(5, 8))


def test_squared_distances_match_brute_force():
    x, c = torch.randn(20, 5), torch.randn(7, 5)
    ref = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    assert torch.allclose(squared_distances(x, c), ref, atol=1e-5)


def test_lloyd_iterations_match_scipy_kmeans2_from_the_same_start():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 6)).astype(np.float64)
    init = x[rng.choice(500, 12, replace=False)].copy()
    ref_c, ref_labels = kmeans2(x, init.copy(), iter=8, minit="matrix", missing="warn")
    out = fit_kmeans(torch.from_numpy(x).float(), 12, iters=8, tol=-1.0, init=torch.from_numpy(init).float(), reseed_empty=False)
    assert out.iterations == 8
    assert np.allclose(out.centroids.numpy(), ref_c, atol=1e-4)
    ids = nearest_centroid(torch.from_numpy(x).float(), out.centroids)
    labels_after, _ = vq(x, ref_c)
    assert np.array_equal(ids.numpy(), labels_after)
    inertia = ((x - ref_c[labels_after]) ** 2).sum()
    assert out.inertia == pytest.approx(inertia, rel=1e-4)


def test_fit_recovers_well_separated_blobs_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    x = (centers[:, None, :] + 0.3 * torch.randn(4, 200, 2, generator=g)).reshape(-1, 2)
    out = fit_kmeans(x, 4, seed=3)
    found = out.centroids[torch.cdist(centers, out.centroids).argmin(1)]
    assert torch.allclose(found, centers, atol=0.1)
    assert sorted(out.counts.tolist()) == [200, 200, 200, 200]
    again = fit_kmeans(x, 4, seed=3)
    assert torch.equal(out.centroids, again.centroids)


def test_empty_clusters_are_reseeded():
    x = torch.cat([torch.zeros(50, 2), torch.ones(50, 2) * 5, torch.tensor([[20.0, 20.0]])])
    init = torch.tensor([[0.0, 0.0], [100.0, 100.0], [-100.0, -100.0]])  # two start far from everything
    out = fit_kmeans(x, 3, init=init, iters=10)
    assert int((out.counts == 0).sum()) == 0
    assert out.inertia < 1e-6


def test_kmeans_plus_plus_picks_distinct_points_and_errors_are_clear():
    x = torch.randn(100, 3)
    c = kmeans_plus_plus(x, 10, torch.Generator().manual_seed(0))
    assert torch.unique(c, dim=0).shape[0] == 10
    assert all(bool((x == row).all(1).any()) for row in c)
    with pytest.raises(ValueError, match="cannot fit 10 clusters to 5 feature vectors"):
        fit_kmeans(torch.randn(5, 3), 10)
    with pytest.raises(ValueError, match="NaN"):
        fit_kmeans(torch.tensor([[float("nan"), 0.0]] * 4), 2)
