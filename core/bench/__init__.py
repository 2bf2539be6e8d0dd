"""Benchmarks of core's engines, run by ``diffuspeech bench NAME``: one module each.

A bench is ``run(args) -> dict`` plus ``add_arguments(parser)``, registered through the
``register_benches`` hook (plugins register theirs the same way, from their own package);
the command prints the dict as one JSON line (``--json``) or as aligned text. Figures are
ratios against a reference measured in the same run, plus the device (:func:`device_name`).
"""

from __future__ import annotations

import platform

import torch

from ..hookspecs import hookimpl

__all__ = ["device_name"]


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
