"""Decoding settings: the ``generation`` section of a config, and what the engines take.

One dataclass for both routes (a model's ``generation`` section, overridable per call, and
``generate(backbone, canvas, DecodeOptions(...))``), validated once by :func:`check_options`.
Importing this module loads no engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..compose import SECTION_SCHEMAS, checked_section
from ..errors import UserError

__all__ = [
    "GENERATION_MODES", "KV_CACHE_MODES", "SAMPLING_BACKENDS", "DecodeOptions", "GenerationError", "check_options", "validate_generation_section",
]

GENERATION_MODES = ("diffusion", "autoregressive", "hybrid", "interleaved")
SAMPLING_BACKENDS = ("auto", "triton", "torch")
KV_CACHE_MODES = ("none", "prefix", "dual")


class GenerationError(UserError):
    """Bad generation input or settings, or a numerical failure while generating."""


@dataclass
class DecodeOptions:
    # "diffusion" | "autoregressive" (left to right, one token per pass; needs attention.name=causal)
    # | "hybrid" (TtT: text left to right, then speech by diffusion; needs attention.name=hybrid or causal)
    # | "interleaved" (TtT's order: target segments in reading order, text left to right, speech by diffusion in blocks)
    mode: str = "diffusion"
    steps: int = 32  # denoising steps in total over the blocks (the pipeline caps them at one per target token and rounds them up to whole steps per block)
    block_length: Optional[int] = None  # semi-autoregressive blocks over the targets (1 = strictly left to right); None = one block
    temperature: float = 0.0  # Gumbel-max temperature; 0 = greedy argmax
    cfg_scale: float = 0.0  # classifier-free guidance: logits = u + (scale + 1) * (c - u); 0 = off
    use_scheduler: bool = True  # reveal counts follow the model's `scheduler` (per modality); False = LLaDA's even split
    lengths: dict[str, int] = field(default_factory=dict)  # target field -> length budget (default: the segment's max_len)
    default_length: Optional[int] = 64  # budget of a target with neither max_len nor a `lengths` entry (early stop ends it sooner); None = an error
    seed: Optional[int] = 0  # sampling seed (reproducible outputs); None = a fresh draw
    backend: str = "auto"  # sampling kernel: auto (Triton on CUDA, torch elsewhere) | triton | torch
    kv_cache: str = "none"  # approximate KV cache within each block (Fast-dLLM): none | prefix | dual; needs block_length
    # decode copies of each speech condition played at these rates (e.g. [1.0, 0.9, 1.1]); the majority
    # of the text targets wins, ties go to the first rate; [] = off
    speed_votes: list[float] = field(default_factory=list)
    defer_ids: list[int] = field(default_factory=list)  # candidates with these ids get confidence 0 (revealed last), e.g. EOS/EoT
    record_trajectory: bool = False  # return [B, L] step at which each position was revealed
    progress: bool = False  # tqdm bar over steps
    max_logits_bytes: int = 256 << 20  # bound on the float32 logits held at once (row chunks of the head)


def check_options(options: DecodeOptions) -> None:
    """Raise :class:`GenerationError` naming the first invalid setting and its valid values."""
    if options.mode not in GENERATION_MODES:
        raise GenerationError(f"generation.mode: {options.mode!r}; valid: {', '.join(GENERATION_MODES)}")
    if isinstance(options.steps, bool) or not isinstance(options.steps, int) or options.steps <= 0:
        raise GenerationError(f"generation.steps must be a positive integer, got {options.steps!r}")
    if options.block_length is not None and (isinstance(options.block_length, bool) or not isinstance(options.block_length, int) or options.block_length <= 0):
        raise GenerationError(f"generation.block_length must be a positive integer or None (one block), got {options.block_length}")
    if not options.temperature >= 0:  # also rejects NaN
        raise GenerationError(f"generation.temperature must be >= 0 (0 = greedy), got {options.temperature}")
    if not options.cfg_scale >= 0:
        raise GenerationError(f"generation.cfg_scale must be >= 0 (0 = no guidance), got {options.cfg_scale}")
    if options.backend not in SAMPLING_BACKENDS:
        raise GenerationError(f"generation.backend: unknown sampling backend {options.backend!r}; valid choices: {', '.join(SAMPLING_BACKENDS)}")
    if options.kv_cache not in KV_CACHE_MODES:
        raise GenerationError(f"generation.kv_cache: unknown kv_cache {options.kv_cache!r}; valid choices: {', '.join(KV_CACHE_MODES)}")
    if options.kv_cache != "none" and options.block_length is None:
        raise GenerationError(
            f"generation.kv_cache={options.kv_cache!r} caches keys/values between the steps of a block: set block_length "
            "(e.g. 32) for semi-autoregressive decoding, or use kv_cache='none'"
        )
    if options.default_length is not None and (isinstance(options.default_length, bool) or options.default_length < 1):
        raise GenerationError(f"generation.default_length must be a positive integer or null, got {options.default_length!r}")
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in options.lengths.values()):
        raise GenerationError(f"generation.lengths: lengths must be integers >= 0, got {dict(options.lengths)}")


validate_generation_section = checked_section(DecodeOptions, check_options, "generation")
SECTION_SCHEMAS["generation"] = validate_generation_section


