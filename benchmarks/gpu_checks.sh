#!/usr/bin/env bash
# The GPU checks and benches in one run, for a machine with one CUDA GPU (e.g. a lent H100/H200).
# Prints one JSON line per bench; the GPU-only tests (the Triton draw's chi-square test, the kernel
# against the torch path on the device) run first. Usage: bash benchmarks/gpu_checks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print(torch.cuda.get_device_name())"
python -m pytest -q tests/test_sampling_kernel.py tests/test_kernels_compile.py tests/test_generation_kv_cache.py
diffuspeech bench sampler --json
diffuspeech bench decode --json --preset 8b --prompt 256 --gen 256 --block-length 32 --steps 256
diffuspeech bench backbone --json
diffuspeech bench train --json --device cuda --preset 1b --batch 8 --length 1024
