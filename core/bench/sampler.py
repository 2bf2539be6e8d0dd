"""``diffuspeech bench sampler``: one sampling step against LLaDA's reference algorithm.

CPU part (always): a tiny backbone with DiffuSpeech's 126,973-id vocabulary and a
256-position canvas (128 condition + 128 target positions, LLaDA's demo setting of blocks
of 32). Timed is the sampling step after the body: output head + candidate/confidence +
selection. The reference computes full-canvas logits, float64 Gumbel noise (temperature
> 0), a full softmax and a per-row top-k loop, exactly as LLaDA's generate() does; ours
applies the head only at the positions that may be revealed now and samples them with the
fused kernel path. ``identical`` runs a whole generation both ways at temperature 0.

CUDA part (when a GPU is visible): the fused kernel on ``[1024 x 126973]`` bf16 logits
against the reference's float64 Gumbel path, as time, bytes moved / peak bandwidth and
peak memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import Backbone
from ..sampling.generation import CanvasSpec, _sample_candidates, generate
from ..sampling.options import DecodeOptions
from . import device_name, median_seconds, peak_bandwidth
from .reference import reference_generate, reference_select

VOCAB = 126_973
MASK_ID = 126_336


def add_arguments(parser) -> None:
    parser.add_argument("--canvas", type=int, default=256, help="canvas positions (half condition, half target)")
    parser.add_argument("--block-length", type=int, default=32, help="semi-autoregressive block length")
    parser.add_argument("--hidden", type=int, default=64, help="hidden size of the tiny backbone")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (the median is reported)")
    parser.add_argument("--identical-steps", type=int, default=16, help="steps of the temperature-0 comparison run")
    parser.add_argument("--gpu-rows", type=int, default=1024, help="rows of the GPU kernel benchmark")


class _TinyBackbone(Backbone):
    """Embedding + learned positions + one attention block + untied 126,973-id head (random weights)."""

    def __init__(self, vocab: int, dim: int, max_len: int, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.emb = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=gen) * (3.0 / math.sqrt(p.shape[-1]))
        self.head.bias.data[MASK_ID] = -1e4  # like a trained model, never predicts [MASK]
        self._vocab, self._dim, self._max = vocab, dim, max_len

    vocab_size = property(lambda self: self._vocab)
    hidden_size = property(lambda self: self._dim)
    max_seq_len = property(lambda self: self._max)

    def hidden_states(self, input_ids, attention_mask=None):
        x = self.emb(input_ids) + self.pos(torch.arange(input_ids.shape[1], device=input_ids.device))[None]
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        x = x + F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], attn_mask=attention_mask)[:, 0]
        return self.norm(x)

    def output_head(self):
        return self.head

    def resize_vocab(self, new_size: int, init: str = "mean") -> None:
        raise NotImplementedError("benchmark backbone")


def _median_ms(fn: Callable[[], Any], repeats: int, sync: Callable[[], None] | None = None) -> float:
    return 1e3 * median_seconds(fn, repeats, sync)


@torch.no_grad()
def _cpu_step(args) -> dict[str, Any]:
    from ..compose import build_component

    cond, gen = args.canvas // 2, args.canvas - args.canvas // 2
    model = _TinyBackbone(VOCAB, args.hidden, args.canvas).eval()
    prompt = torch.randint(0, 126_000, (1, cond), generator=torch.Generator().manual_seed(1))
    x = torch.cat([prompt, torch.full((1, gen), MASK_ID)], dim=1)  # first step of the first block
    hidden = model.hidden_states(x)  # [1, L, D]: the body is the same for both, not timed
    block_end = cond + args.block_length
    k = torch.tensor([1])
    strategy = build_component("samplers", "low_confidence")
    need = (x == MASK_ID) & (torch.arange(x.shape[1]) < block_end)[None]  # [1, L]
    lo = torch.zeros(int(need.sum()), dtype=torch.long)
    hi = torch.full_like(lo, VOCAB)

    def ours(temperature: float) -> Callable[[], Any]:
        opts = DecodeOptions(temperature=temperature, backend="torch")
        gen_ = torch.Generator().manual_seed(0)
        rows = max(1, opts.max_logits_bytes // (4 * VOCAB))

        def step():
            ids, prob, _ = _sample_candidates(model, hidden[need], None, lo, hi, opts, MASK_ID, gen_, "torch", rows)
            conf = torch.full(x.shape, -math.inf).masked_scatter(need, prob)
            reveal = strategy.select(conf, k, gen_)
            return torch.where(reveal, x.masked_scatter(need, ids), x)

        return step

    ref_ms = {t: _median_ms(lambda t=t: reference_select(model, hidden, x, block_end, k, t), args.repeats) for t in (0.0, 1.0)}
    our_ms = {t: _median_ms(ours(t), args.repeats) for t in (0.0, 1.0)}

    steps = args.identical_steps
    ref_tokens = reference_generate(model, prompt, gen, steps, args.block_length)
    canvas = CanvasSpec(tokens=torch.cat([prompt, torch.full((1, gen), MASK_ID)], dim=1), mask_id=MASK_ID)
    our_tokens = generate(model, canvas, DecodeOptions(steps=steps, block_length=args.block_length, backend="torch")).tokens
    return {
        "device": device_name("cpu"),
        "vocab": VOCAB,
        "canvas": args.canvas,
        "block_length": args.block_length,
        "rows_scored": int(need.sum()),
        "reference_rows_scored": args.canvas,
        "reference_step_ms": round(ref_ms[1.0], 2),
        "step_ms": round(our_ms[1.0], 2),
        "speedup": round(ref_ms[1.0] / our_ms[1.0], 2),
        "reference_step_ms_t0": round(ref_ms[0.0], 2),
        "step_ms_t0": round(our_ms[0.0], 2),
        "speedup_t0": round(ref_ms[0.0] / our_ms[0.0], 2),
        "identical": bool(torch.equal(ref_tokens, our_tokens)),
        "identical_steps": steps,
    }


@torch.no_grad()
def _gpu_kernel(args) -> dict[str, Any]:
    from ..sampling.kernels.sampling import sample_rows

    device = torch.device("cuda")
    rows = args.gpu_rows
    gen = torch.Generator(device=device).manual_seed(0)
    logits = (torch.randn(rows, VOCAB, device=device, generator=gen) * 3).to(torch.bfloat16)
    lo = torch.zeros(rows, dtype=torch.long, device=device)
    hi = torch.full((rows,), VOCAB, dtype=torch.long, device=device)
    sync = torch.cuda.synchronize

    def reference(temperature: float):
        noisy = logits.to(torch.float64)
        noise = torch.rand_like(noisy, dtype=torch.float64)
        noisy = noisy.exp() / (-torch.log(noise)) ** temperature
        x0 = torch.argmax(noisy, dim=-1)
        p = F.softmax(logits, dim=-1)
        return x0, torch.gather(p, -1, x0[:, None]).squeeze(-1)

    def kernel(temperature: float):
        return sample_rows(logits, lo, hi, temperature=temperature, generator=gen, backend="triton")

    def peak_mb(fn) -> float:
        sync()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync()
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20

    ref_ms = _median_ms(lambda: reference(1.0), args.repeats, sync)
    ker_ms = _median_ms(lambda: kernel(1.0), max(20, args.repeats), sync)
    ker_t0_ms = _median_ms(lambda: kernel(0.0), max(20, args.repeats), sync)
    ids_k, _ = sample_rows(logits, lo, hi, backend="triton")
    ids_t, _ = sample_rows(logits, lo, hi, backend="torch")
    moved = logits.numel() * logits.element_size() + rows * (8 + 8 + 8 + 4)  # logits, lo, hi in; id, prob out
    peak = peak_bandwidth(device)
    out = {
        "gpu": device_name(device),
        "gpu_rows": rows,
        "gpu_reference_ms": round(ref_ms, 3),
        "gpu_kernel_ms": round(ker_ms, 3),
        "gpu_kernel_ms_t0": round(ker_t0_ms, 3),
        "gpu_speedup": round(ref_ms / ker_ms, 1),
        "gpu_kernel_gbps": round(moved / (ker_ms * 1e-3) / 1e9, 1),
        "gpu_reference_peak_mb": round(peak_mb(lambda: reference(1.0)), 1),
        "gpu_kernel_peak_mb": round(peak_mb(lambda: kernel(1.0)), 3),
        "gpu_kernel_identical_t0": bool(torch.equal(ids_k, ids_t)),
    }
    if peak:
        out["gpu_peak_gbps"] = round(peak / 1e9, 1)
        out["gpu_bandwidth_fraction"] = round(moved / (ker_ms * 1e-3) / peak, 3)
    return out


def run(args) -> dict[str, Any]:
    if args.block_length <= 0 or (args.canvas - args.canvas // 2) % args.block_length:
        raise SystemExit(f"--block-length must divide the {args.canvas - args.canvas // 2} target positions")
    result = _cpu_step(args)
    if torch.cuda.is_available():
        result.update(_gpu_kernel(args))
    else:
        result["gpu"] = None
    return result
