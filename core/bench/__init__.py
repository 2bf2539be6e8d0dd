"""Benchmarks run by ``diffuspeech bench NAME``: one module each.

A module defines ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> dict``;
the command prints the dict as one JSON line (``--json``) or as aligned text.
Figures are ratios against a reference measured in the same run, plus the device.
"""

from __future__ import annotations

import platform

import torch


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
