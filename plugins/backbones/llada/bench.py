"""``diffuspeech bench backbone``: forward speed of the llada backbone.

CPU: tokens/s of the full forward (logits at every position) for the "tiny" and "small"
presets, with a transformers Llama of the same shape, run bidirectionally through the
``hf_decoder`` backbone, as the in-run reference (``*_vs_hf_llama`` = ours / reference).
CUDA (when available): bf16 latency of an 8B-shaped (LLaDA-8B) randomly initialised model,
built on the device (no checkpoint), at 1,024 tokens, batch 1: full forward, and body plus
logits at 32 positions (what a block-cached sampler step needs).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from diffuspeech.bench import device_name, median_seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--length", type=int, default=256, help="CPU canvas length (default 256)")
    parser.add_argument("--batch", type=int, default=1, help="CPU batch size (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed CPU forwards per model (median is reported)")
    parser.add_argument("--gpu-length", type=int, default=1024, help="canvas length of the CUDA 8B run (default 1024)")
    parser.add_argument("--gpu-repeats", type=int, default=10, help="timed CUDA forwards (median is reported)")
    parser.add_argument("--no-gpu", action="store_true", help="skip the CUDA 8B measurement")
    parser.add_argument("--no-reference", action="store_true", help="skip the transformers Llama reference on CPU")


def _llama_reference(arch: Any) -> torch.nn.Module:
    from diffuspeech.compose import build_component

    return build_component("backbones", {
        "name": "hf_decoder", "model_type": "llama", "hidden_size": arch.d_model,
        "num_hidden_layers": arch.n_layers, "num_attention_heads": arch.n_heads,
        "num_key_value_heads": arch.n_kv_heads, "intermediate_size": arch.mlp_hidden_size,
        "vocab_size": arch.vocab_size, "max_position_embeddings": arch.max_sequence_length,
        "rope_theta": arch.rope_theta, "tie_word_embeddings": False, "seed": 0,
    }).eval()


def _cpu(args: argparse.Namespace, out: dict[str, Any]) -> None:
    from diffuspeech.compose import build_component

    tokens = args.batch * args.length
    for preset in ("tiny", "small"):
        model = build_component("backbones", {"name": "llada", "preset": preset, "seed": 0}).eval()
        ids = torch.randint(0, model.vocab_size, (args.batch, args.length))
        out[f"cpu_{preset}_params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
        with torch.inference_mode():
            if args.no_reference:
                seconds = median_seconds(lambda: model(ids), args.repeats)  # noqa: B023, F821 - called at once
            else:
                ref = _llama_reference(model.arch)
                # alternate ours and the reference so load changes on a shared machine hit both
                model(ids), ref(ids)  # warm-up
                pairs = [(median_seconds(lambda: model(ids), 1, warmup=False),  # noqa: B023, F821 - called at once
                          median_seconds(lambda: ref(ids), 1, warmup=False))  # noqa: B023
                         for _ in range(max(1, args.repeats))]
                seconds = statistics.median(p[0] for p in pairs)
                ref_seconds = statistics.median(p[1] for p in pairs)
                out[f"cpu_{preset}_hf_llama_tokens_per_s"] = round(tokens / ref_seconds, 1)
                out[f"cpu_{preset}_vs_hf_llama"] = round(ref_seconds / seconds, 3)
                del ref
        out[f"cpu_{preset}_tokens_per_s"] = round(tokens / seconds, 1)
        del model


def measure_latency(device: torch.device, preset: str = "8b", length: int = 1024, repeats: int = 10) -> dict[str, Any]:
    """bf16 latency of a randomly initialised llada ``preset`` built directly on ``device``."""
    from diffuspeech.compose import build_component

    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    model = build_component("backbones", {
        "name": "llada", "preset": preset, "dtype": "bfloat16", "device": str(device), "seed": 0,
    }).eval()
    sync()
    init_s = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, model.vocab_size, (1, length), device=device)
    some = torch.zeros(1, length, dtype=torch.bool, device=device)
    some[0, -32:] = True  # 32 positions, as in a block-cached sampler step
    with torch.inference_mode():
        full = median_seconds(lambda: model(ids), repeats, sync)
        sparse = median_seconds(lambda: model(ids, logits_at=some), repeats, sync)
    arch = model.arch
    # matmul FLOPs: 2 per weight per token, plus QK^T and AV (4 * L^2 * d per layer)
    flops = 2 * params * length + 4 * arch.n_layers * length * length * arch.d_model
    tag = f"gpu_{preset}" if cuda else f"{device.type}_{preset}"
    result = {
        f"{tag}_init_s": round(init_s, 2),
        f"{tag}_params_b": round(params / 1e9, 3),
        f"{tag}_tokens": length,
        f"{tag}_bf16_forward_ms": round(full * 1e3, 2),
        f"{tag}_bf16_forward_tokens_per_s": round(length / full, 1),
        f"{tag}_bf16_tflops": round(flops / full / 1e12, 3),
        f"{tag}_bf16_logits_at_32_ms": round(sparse * 1e3, 2),
    }
    if cuda:
        result[f"{tag}_peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cpu_device": device_name("cpu"),
        "cpu_batch": args.batch,
        "cpu_length": args.length,
    }
    _cpu(args, out)
    if torch.cuda.is_available() and not args.no_gpu:
        device = torch.device("cuda")
        out["gpu_device"] = device_name(device)
        out.update(measure_latency(device, "8b", args.gpu_length, args.gpu_repeats))
    else:
        out["gpu_device"] = None  # no CUDA device: the 8B measurement needs one
    return out
