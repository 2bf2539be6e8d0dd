"""``diffuspeech bench train``: output head at masked positions only vs over the whole canvas.

A tiny LLaDA backbone with DiffuSpeech's 126,973-id vocabulary (so the head dominates, as
it does for short canvases of the real model), half of the canvas masked (linear schedule
at t = 0.5, iid noiser), AdamW training steps through ``masked_cross_entropy`` with
``logits_on="masked"`` and ``"all"``, timed interleaved in one process. Peak memory of one
forward + backward (the part the choice changes; the AdamW update is the same in both)
beyond the weights, gradients and AdamW moments: on CPU the exact peak of tensor bytes
allocated in the step (a dispatch-mode tracker), on CUDA ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import time
from typing import Any


def add_arguments(parser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--batch", type=int, default=2, help="sequences per step")
    parser.add_argument("--length", type=int, default=256, help="canvas length")
    parser.add_argument("--vocab", type=int, default=126973, help="vocabulary size (DiffuSpeech on LLaDA: 126973)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    parser.add_argument("--preset", default="tiny", help="llada shape: tiny (default) | small | 1b (1.34B with the 126,973-id vocabulary, for a GPU)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's dense bf16 peak for model FLOPs utilisation (default: known H100/H200/A100 values)")


ONE_B = {"d_model": 2048, "n_layers": 16, "n_heads": 16, "n_kv_heads": 16, "mlp_hidden_size": 5632}  # 1.34B: 0.82B body + 2 x 0.26B vocabulary rows
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # dense bf16, SXM


def model_flops_per_token(params: int, length: int, d_model: int, n_layers: int) -> float:
    """Training FLOPs per token: 6 N (forward + backward of every weight) + 12 L d_model n_layers (attention scores)."""
    return 6.0 * params + 12.0 * n_layers * d_model * length


def measure(device: str, batch: int, length: int, vocab: int, steps: int, threads: int, preset: str = "tiny") -> dict[str, Any]:
    """Both modes in this process: interleaved timed steps, then one memory-tracked step each."""
    import torch

    from diffuspeech.compose import build_component
    from diffuspeech.training.losses import masked_cross_entropy

    from ._memory import PeakTensorMemory

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    shape = ONE_B if preset == "1b" else {"preset": preset}
    backbone = build_component(
        "backbones", {"name": "llada", **shape, "vocab_size": vocab, "max_sequence_length": length, "seed": 0, "device": device}
    )
    scheduler, noiser = build_component("schedulers", "linear"), build_component("noisers", "iid")
    mask_id = vocab - 1
    opt = torch.optim.AdamW(backbone.parameters(), lr=1e-5, fused=True)  # as the trainer (build_optimizer)
    for p in backbone.parameters():  # gradients and AdamW moments exist before any measured step
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=False)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab - 1, (batch, length), generator=gen).to(dev)  # [B, L]
    target = torch.ones(batch, length, dtype=torch.bool, device=dev)  # [B, L]
    modality = torch.zeros(batch, length, dtype=torch.long, device=dev)  # text
    t = torch.full((batch,), 0.5, device=dev)  # linear schedule at t=0.5: mask ratio ~0.5

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def loss_and_grads(logits_on: str) -> int:
        masked, p_mask = noiser(target, modality, t, scheduler, gen)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = masked_cross_entropy(backbone, ids, masked, p_mask, target, mask_id, None, logits_on=logits_on)
        loss.backward()
        return int(masked.sum())

    def step(logits_on: str) -> int:
        n = loss_and_grads(logits_on)
        opt.step()
        opt.zero_grad(set_to_none=False)
        return n

    modes = ("all", "masked")
    seconds = dict.fromkeys(modes, 0.0)
    masked_count = 0
    for mode in modes:  # warm-up
        step(mode)
    for _ in range(steps):  # interleaved, so load changes on the machine hit both modes alike
        for mode in modes:
            sync()
            start = time.perf_counter()
            masked_count += step(mode)
            sync()
            seconds[mode] += time.perf_counter() - start
    peak_mb = {}
    for mode in modes:
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            loss_and_grads(mode)
            peak_mb[mode] = (torch.cuda.max_memory_allocated() - base) / 2**20
        else:
            with PeakTensorMemory() as tracker:
                loss_and_grads(mode)
            peak_mb[mode] = tracker.peak / 2**20
        opt.zero_grad(set_to_none=False)
    tokens = batch * length * steps
    return {
        "tokens_per_s": {m: tokens / seconds[m] for m in modes},
        "peak_mb": peak_mb,
        "mask_ratio": masked_count / (2 * tokens),
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in backbone.parameters()),
        "arch": (backbone.arch.d_model, backbone.arch.n_layers),
    }


def run(args) -> dict[str, Any]:
    from . import device_name

    r = measure(args.device, args.batch, args.length, args.vocab, args.steps, args.threads, args.preset)
    full, masked = r["tokens_per_s"]["all"], r["tokens_per_s"]["masked"]
    out = {
        "device": device_name(args.device),
        "vocab_size": args.vocab,
        "batch": args.batch,
        "length": args.length,
        "mask_ratio": round(r["mask_ratio"], 3),
        "full_logits_tokens_per_s": round(full, 1),
        "masked_logits_tokens_per_s": round(masked, 1),
        "speedup": round(masked / full, 2),
        "full_logits_peak_mb": round(r["peak_mb"]["all"], 1),
        "masked_logits_peak_mb": round(r["peak_mb"]["masked"], 1),
        "memory_ratio": round(r["peak_mb"]["all"] / max(r["peak_mb"]["masked"], 1e-6), 2),
        "peak_memory": "forward+backward above weights/grads/AdamW state: "
        + ("CUDA max_memory_allocated" if args.device.startswith("cuda") else "tensor bytes (dispatch-mode tracker)"),
        "params_m": round(r["params"] / 1e6, 1),
    }
    if args.device.startswith("cuda"):
        import torch

        name = torch.cuda.get_device_name(args.device)
        peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        if peak:
            flops = model_flops_per_token(r["params"], args.length, *r["arch"])
            out["full_logits_mfu"] = round(full * flops / (peak * 1e12), 3)
            out["masked_logits_mfu"] = round(masked * flops / (peak * 1e12), 3)  # of the full model's FLOPs: the work avoided counts
            out["peak_tflops"] = peak
    return out
