"""Hybrid attention (TtT): causal for text, bidirectional inside each contiguous speech span.

A text (or special) position at index i sees keys 0..i. A speech position whose contiguous
speech span ends at index e sees keys 0..e: everything before its span plus the whole span.
Spans are split by any non-speech position, padding included.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffuspeech.attention import AttentionPolicy, apply_padding, check_inputs
from diffuspeech.modality import MODALITY_CODE, SPEECH


def speech_span_end(is_speech: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` bool -> ``[B, L]`` long: last index of the contiguous speech span holding each
    speech position; the position itself for every other position."""
    batch, length = is_speech.shape
    pos = torch.arange(length, device=is_speech.device).expand(batch, length)  # [B, L]
    stop = torch.where(is_speech, torch.full_like(pos, length), pos)  # [B, L] index of non-speech, else L
    # next non-speech index at or after each position: reverse cumulative minimum
    next_stop = stop.flip(1).cummin(dim=1).values.flip(1)  # [B, L]
    return torch.where(is_speech, next_stop - 1, pos)


class HybridAttention(AttentionPolicy):
    @dataclass
    class Config:
        pass

    def mask(self, modality: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        check_inputs(modality, valid)
        is_speech = (modality == MODALITY_CODE[SPEECH]) & valid  # [B, L]
        horizon = speech_span_end(is_speech)  # [B, L] last key index each query may see
        length = valid.shape[1]
        k = torch.arange(length, device=valid.device)  # [L]
        allowed = k[None, None, :] <= horizon[:, :, None]  # [B, L, L]
        return apply_padding(allowed, valid)
