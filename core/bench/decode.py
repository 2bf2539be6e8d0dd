"""``diffuspeech bench decode``: whole generations against LLaDA's reference loop over the same backbone.

A random-weight ``llada`` (``--preset``; ``8b`` is LLaDA-8B's shape, built on the GPU in bf16) decodes
a ``--prompt`` + ``--gen`` canvas in blocks of ``--block-length`` with ``--steps`` steps, once by the
reference loop (``diffuspeech.bench.reference``: a full forward and float64 softmax every step) and
once by the engine for each ``kv_cache`` mode (``none``, ``prefix``, ``dual``). Printed per mode:
generated tokens/s, the ratio to the reference, ms per step, ms per cached step (the steps that ran
only a window, after the full forwards are taken out), and agreement with the reference's tokens
(``none`` must be identical at temperature 0). On CUDA the weight-read floor of a cached step (the
bytes of the weights over the HBM bandwidth) is printed beside it.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from ..compose import build_component
from ..sampling.generation import CanvasSpec, generate
from ..sampling.options import DecodeOptions
from . import device_name, peak_bandwidth
from .reference import reference_generate

MODES = ("none", "prefix", "dual")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cuda = torch.cuda.is_available()
    parser.add_argument("--preset", default="8b" if cuda else "tiny", help="llada preset with random weights: tiny | small | 8b")
    parser.add_argument("--prompt", type=int, default=256 if cuda else 64, help="prompt (condition) positions")
    parser.add_argument("--gen", type=int, default=256 if cuda else 64, help="positions to generate")
    parser.add_argument("--block-length", type=int, default=32, help="semi-autoregressive block length")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps in total (default: one per generated token)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> tuple[Any, float]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


@torch.no_grad()
def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gen % args.block_length:
        raise ValueError(f"--gen ({args.gen}) must be a multiple of --block-length ({args.block_length})")
    device = torch.device(args.device)
    steps = args.steps or args.gen
    length = args.prompt + args.gen
    backbone = build_component("backbones", {
        "name": "llada", "preset": args.preset, "max_sequence_length": max(length, 64), "seed": 0, "device": str(device),
        "dtype": "bfloat16" if device.type == "cuda" else "float32",
    }).eval()
    mask_id = backbone.vocab_size - 1
    head = backbone.output_head()
    head.weight[mask_id].zero_()  # like a trained model's [MASK] row: never the best candidate in practice
    prompt = torch.randint(0, mask_id, (args.batch, args.prompt), generator=torch.Generator().manual_seed(0)).to(device)
    tokens = torch.cat([prompt, torch.full((args.batch, args.gen), mask_id, device=device)], dim=1)
    generated = args.batch * args.gen
    weight_bytes = sum(p.numel() * p.element_size() for p in backbone.parameters())

    backbone.logits(backbone.hidden_states(tokens))  # warm-up
    ref_tokens, ref_s = _timed(lambda: reference_generate(backbone, prompt, args.gen, steps, args.block_length, mask_id), device)
    _, full_s = _timed(lambda: backbone.logits(backbone.hidden_states(tokens)), device)
    out: dict[str, Any] = {
        "device": device_name(device),
        "backbone": f"llada {args.preset} (random weights, {weight_bytes / 1e9:.2f} GB)",
        "canvas": f"{args.prompt} + {args.gen}, blocks of {args.block_length}, {steps} steps, batch {args.batch}",
        "reference_tokens_per_s": round(generated / ref_s, 2),
        "reference_ms_per_step": round(1e3 * ref_s / steps, 3),
        "full_forward_ms": round(1e3 * full_s, 3),
    }
    peak = peak_bandwidth(device) if device.type == "cuda" else None
    if peak:
        out["weight_read_floor_ms"] = round(1e3 * weight_bytes / peak, 3)
    for mode in MODES:
        options = DecodeOptions(steps=steps, block_length=args.block_length, kv_cache=mode, seed=0)
        generate(backbone, CanvasSpec(tokens=tokens.clone(), mask_id=mask_id), DecodeOptions(
            steps=args.gen // args.block_length, block_length=args.block_length, kv_cache=mode))  # warm-up
        res, secs = _timed(lambda o=options: generate(backbone, CanvasSpec(tokens=tokens.clone(), mask_id=mask_id), o), device)
        sel = tokens == mask_id
        full = res.forward_passes - res.cached_forwards
        cached_ms = (1e3 * (secs - full * full_s) / res.cached_forwards) if res.cached_forwards else None
        out[f"{mode}_tokens_per_s"] = round(generated / secs, 2)
        out[f"{mode}_vs_reference"] = round(ref_s / secs, 2)
        out[f"{mode}_ms_per_step"] = round(1e3 * secs / max(1, res.steps), 3)
        if cached_ms is not None:
            out[f"{mode}_ms_per_cached_step"] = round(max(cached_ms, 0.0), 3)
            if peak:
                out[f"{mode}_cached_step_vs_floor"] = round(max(cached_ms, 0.0) / out["weight_read_floor_ms"], 2)
        out[f"{mode}_agreement"] = round(float((res.tokens[sel] == ref_tokens[sel]).float().mean()), 4)
        if mode == "none":
            out["none_identical_to_reference"] = bool(torch.equal(res.tokens, ref_tokens))
    return out
