"""The fused sampling kernel: Triton (run on CPU under TRITON_INTERPRET=1) against the torch path.

The Triton interpreter must be switched on before triton is imported, so the kernel runs in
one subprocess per test session that writes its outputs to a file; the tests compare them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from diffuspeech.sampling.kernels.sampling import gumbel_from_uniform, resolve_backend, sample_rows, sample_rows_torch

V = 300
BANNED = 7

SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from diffuspeech.sampling.kernels.sampling_triton import sample_rows_triton
    from diffuspeech.sampling.kernels.sampling import sample_rows
    inputs = torch.load(sys.argv[1], weights_only=True)
    x, lo, hi = inputs["logits"], inputs["lo"], inputs["hi"]
    out = {}
    for dtype in ("float32", "bfloat16"):
        xi = x.to(getattr(torch, dtype))
        out[f"t0_{dtype}"] = sample_rows_triton(xi, lo, hi, banned_id=%(banned)d, block_v=64)
    g = lambda s: torch.Generator().manual_seed(s)
    out["t1_a"] = sample_rows_triton(x, lo, hi, banned_id=%(banned)d, temperature=1.0, generator=g(1), block_v=64)
    out["t1_b"] = sample_rows_triton(x, lo, hi, banned_id=%(banned)d, temperature=1.0, generator=g(1), block_v=64)
    out["t1_c"] = sample_rows_triton(x, lo, hi, banned_id=%(banned)d, temperature=1.0, generator=g(2), block_v=64)
    out["dispatch"] = sample_rows(x[:2], lo[:2], hi[:2], backend="triton")
    d = inputs["dist_logits"]
    out["dist"] = sample_rows_triton(d, torch.zeros(len(d), dtype=torch.long), torch.full((len(d),), d.shape[1]),
                                     temperature=0.7, generator=g(3))
    out["nan"] = sample_rows_triton(inputs["nan_logits"], lo[:2], hi[:2], block_v=64)
    out["stats_t0"] = sample_rows_triton(x, lo, hi, banned_id=%(banned)d, block_v=64, with_stats=True)
    out["stats_t1"] = sample_rows_triton(x, lo, hi, banned_id=%(banned)d, temperature=1.0, generator=g(1), block_v=64, with_stats=True)
    torch.save(out, sys.argv[2])
    """
) % {"banned": BANNED}


def _inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, V, generator=gen) * 3.0
    x[5, 10] = x[5, 200] = 50.0  # a tie across chunks: the first index wins
    x[4, BANNED] = 100.0  # the banned id would win if it were not excluded
    lo = torch.tensor([0, 10, 70, 100, 0, 0])
    hi = torch.tensor([V, 20, 131, 299, V, V])
    dist = torch.tensor([[0.0, 1.0, 2.0, -1.0, 0.5]]).expand(400, -1).contiguous()
    nan = x[:2].clone()
    nan[0, 33] = float("nan")
    return {"logits": x, "lo": lo, "hi": hi, "dist_logits": dist, "nan_logits": nan}


@pytest.fixture(scope="module")
def triton_run(tmp_path_factory):
    pytest.importorskip("triton")
    tmp = tmp_path_factory.mktemp("kernel")
    inputs = _inputs()
    torch.save(inputs, tmp / "in.pt")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp / "in.pt"), str(tmp / "out.pt")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return inputs, torch.load(tmp / "out.pt", weights_only=True)


def _naive(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, banned: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent reference: float64 masked softmax, first argmax."""
    cols = torch.arange(x.shape[1])
    ok = (cols >= lo[:, None]) & (cols < hi[:, None]) & (cols != banned)
    z = x.double().masked_fill(~ok, float("-inf"))
    p = torch.softmax(z, dim=-1)
    ids = torch.argmax(z, dim=-1)
    return ids, p.gather(1, ids[:, None]).squeeze(1)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_kernel_matches_torch_path_at_temperature_zero(triton_run, dtype):
    inputs, out = triton_run
    x = inputs["logits"].to(getattr(torch, dtype))
    ids_k, p_k = out[f"t0_{dtype}"]
    ids_t, p_t = sample_rows_torch(x, inputs["lo"], inputs["hi"], banned_id=BANNED)
    ids_n, p_n = _naive(x.float(), inputs["lo"], inputs["hi"], BANNED)
    assert torch.equal(ids_k, ids_t) and torch.equal(ids_k, ids_n)
    assert ids_k[5] == 10 and ids_k[4] != BANNED
    torch.testing.assert_close(p_k, p_t, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(p_k.double(), p_n, rtol=1e-5, atol=1e-6)


def test_kernel_noise_is_seeded_in_range_and_reports_clean_probability(triton_run):
    inputs, out = triton_run
    (ids_a, p_a), (ids_b, p_b), (ids_c, _) = out["t1_a"], out["t1_b"], out["t1_c"]
    assert torch.equal(ids_a, ids_b) and torch.equal(p_a, p_b)
    lo, hi = inputs["lo"], inputs["hi"]
    for ids in (ids_a, ids_c):
        assert ((ids >= lo) & (ids < hi) & (ids != BANNED)).all()
    # the probability is the clean (noise-free) softmax at the sampled id
    x = inputs["logits"]
    cols = torch.arange(V)
    ok = (cols >= lo[:, None]) & (cols < hi[:, None]) & (cols != BANNED)
    p = torch.softmax(x.double().masked_fill(~ok, float("-inf")), dim=-1)
    torch.testing.assert_close(p_a.double(), p.gather(1, ids_a[:, None]).squeeze(1), rtol=1e-5, atol=1e-7)
    assert torch.equal(out["dispatch"][0], _naive(x[:2], lo[:2], hi[:2], -1)[0])


def test_kernel_gumbel_samples_follow_the_softmax(triton_run):
    inputs, out = triton_run
    d = inputs["dist_logits"]
    ids, _ = out["dist"]
    freq = torch.bincount(ids, minlength=d.shape[1]).double() / len(ids)
    expected = torch.softmax(d[0].double() / 0.7, dim=0)
    assert (freq - expected).abs().max() < 0.075  # 400 draws: ~3.3 standard errors; T=1 would be off by 0.14


def _naive_stats(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, banned: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent reference: float64 masked softmax -> (top-1 minus top-2 probability, entropy in nats)."""
    cols = torch.arange(x.shape[1])
    ok = (cols >= lo[:, None]) & (cols < hi[:, None]) & (cols != banned)
    p = torch.softmax(x.double().masked_fill(~ok, float("-inf")), dim=-1)
    top = torch.sort(p, dim=-1, descending=True).values
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(dim=-1)
    return top[:, 0] - top[:, 1], entropy


def test_stats_match_the_softmax_on_every_backend(triton_run):
    inputs, out = triton_run
    x, lo, hi = inputs["logits"], inputs["lo"], inputs["hi"]
    margin_n, entropy_n = _naive_stats(x, lo, hi, BANNED)
    ids_t, p_t, margin_t, entropy_t = sample_rows_torch(x, lo, hi, banned_id=BANNED, with_stats=True)
    torch.testing.assert_close(margin_t.double(), margin_n, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(entropy_t.double(), entropy_n, rtol=1e-5, atol=1e-5)
    for key in ("stats_t0", "stats_t1"):  # the kernel computes them in the same pass, noise or not
        ids_k, p_k, margin_k, entropy_k = out[key]
        torch.testing.assert_close(margin_k.double(), margin_n, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(entropy_k.double(), entropy_n, rtol=1e-5, atol=1e-5)
    assert torch.equal(out["stats_t0"][0], ids_t)  # asking for stats changes nothing else
    assert torch.equal(out["stats_t1"][0], out["t1_a"][0])


def test_kernel_and_torch_path_flag_nan_logits(triton_run):
    inputs, out = triton_run
    _, p_k = out["nan"]
    _, p_t = sample_rows_torch(inputs["nan_logits"], inputs["lo"][:2], inputs["hi"][:2])
    assert torch.isnan(p_k[0]) and torch.isnan(p_t[0])
    assert torch.isfinite(p_k[1]) and torch.isfinite(p_t[1])


def test_torch_path_gumbel_samples_follow_the_softmax():
    d = torch.tensor([[0.0, 1.0, 2.0, -1.0, 0.5]]).expand(4000, -1)
    ids, _ = sample_rows_torch(d, torch.zeros(4000, dtype=torch.long), torch.full((4000,), 5), temperature=0.7,
                               generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(ids, minlength=5).double() / 4000
    assert (freq - torch.softmax(d[0].double() / 0.7, dim=0)).abs().max() < 0.025


def test_gumbel_tail_is_accurate():
    v = torch.tensor([0.0, 1e-9, 1e-4, 0.5, 0.999])
    g = gumbel_from_uniform(v)
    exact = -torch.log(-torch.log1p(-v.double().clamp_min(2.3e-10)))
    torch.testing.assert_close(g.double(), exact, rtol=1e-6, atol=1e-6)
    assert torch.isfinite(g).all()


def test_backend_resolution_and_errors():
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    with pytest.raises(ValueError, match="unknown sampling backend 'cuda'.*auto, triton, torch"):
        resolve_backend("cuda", torch.device("cpu"))
    if not os.environ.get("TRITON_INTERPRET"):
        with pytest.raises(RuntimeError, match="needs CUDA tensors"):
            sample_rows(torch.zeros(1, 4), backend="triton")
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        sample_rows(torch.zeros(1, 4), temperature=-1.0)


CHI2_DF4_P001 = 18.467  # chi-square critical value, 4 degrees of freedom, p = 0.001


ON_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton draw runs on a GPU")


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=ON_GPU)])
def test_temperature_draws_are_exact_in_distribution(backend):
    """10^5 draws over 5 ids at T = 0.7 against softmax(l / T): a chi-square test (p = 0.001)."""
    n = 100_000
    device = "cuda" if backend == "triton" else "cpu"
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0, 0.5]], device=device).expand(n, -1).contiguous()
    lo, hi = torch.zeros(n, dtype=torch.long, device=device), torch.full((n,), 5, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    ids, _ = sample_rows(logits, lo, hi, temperature=0.7, generator=gen, backend=backend)
    observed = torch.bincount(ids.cpu(), minlength=5).double()
    expected = torch.softmax(logits[0].cpu().double() / 0.7, dim=0) * n
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < CHI2_DF4_P001, (chi2, observed.tolist(), expected.tolist())
