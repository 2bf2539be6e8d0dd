"""Numerical kernels: fused sampling (Triton on CUDA, PyTorch elsewhere) and batched selection."""

from ...sampler import topk_mask
from .sampling import SAMPLING_BACKENDS, resolve_backend, sample_rows, sample_rows_torch

__all__ = ["SAMPLING_BACKENDS", "resolve_backend", "sample_rows", "sample_rows_torch", "topk_mask"]
