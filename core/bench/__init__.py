"""Benchmarks of core's engines, run by ``diffuspeech bench NAME``: one module each.

A bench is ``run(args) -> dict`` plus ``add_arguments(parser)``, registered through the
``register_benches`` hook (plugins register theirs the same way, from their own package);
the command prints the dict as one JSON line (``--json``) or as aligned text. Figures are
ratios against a reference measured in the same run, plus the device (:func:`device_name`).
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch

from ..hookspecs import hookimpl

__all__ = ["device_name", "median_seconds", "peak_bandwidth"]


@hookimpl
def register_benches(register):
    for name, help_ in (
        ("sampler", "sampling step (output head + selection) vs LLaDA's reference generate(); fused kernel on GPU"),
        ("kv_cache", "Fast-dLLM prefix/dual KV cache vs full forwards: speed and agreement (and accuracy with --model)"),
        ("train", "training step: LM head on masked positions only vs the whole canvas (126,973-id vocabulary)"),
        ("decode", "whole generations (kv_cache none / prefix / dual) against LLaDA's reference loop; 8B-shaped on CUDA"),
    ):
        register(name, f"diffuspeech.bench.{name}:run", help=help_, add_arguments=f"diffuspeech.bench.{name}:add_arguments")


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def median_seconds(fn: Callable[[], object], repeats: int, sync: Callable[[], None] | None = None, warmup: bool = True) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs (after one warm-up run unless ``warmup=False``);
    ``sync`` (e.g. ``torch.cuda.synchronize``) runs after each call so queued GPU work is counted."""
    sync = sync or (lambda: None)
    if warmup:
        fn()
        sync()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_bandwidth(device: torch.device | str) -> float | None:
    """A CUDA device's peak memory bandwidth in bytes/s, from its memory clock (kHz, double data rate)
    and bus width (bits); None when the driver does not report them."""
    props = torch.cuda.get_device_properties(torch.device(device))
    clock_khz = getattr(props, "memory_clock_rate", 0)
    bus_bits = getattr(props, "memory_bus_width", 0)
    return 2.0 * clock_khz * 1e3 * bus_bits / 8 if clock_khz and bus_bits else None
