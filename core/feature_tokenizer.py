"""Shared base of the built-in tokenizers: frame features followed by a quantizer.

``features`` gives the continuous frames (what ``diffuspeech fit-quantizer`` clusters),
``encode`` quantizes them. A tokenizer built without a quantizer file can still produce
features, which is how a first quantizer is fitted.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from typing import ClassVar

import torch

from diffuspeech.audio import check_waveform, load_audio
from diffuspeech.tokenizer import SpeechTokenizer

from .quantizers import KMeansQuantizer, LinearQuantizer, dedup_units


class FeatureTokenizer(SpeechTokenizer):
    """A :class:`SpeechTokenizer` made of a feature extractor and a quantizer."""

    # Config key that holds the quantizer file (written by fit-quantizer into the new config).
    quantizer_key: ClassVar[str] = "path"
    # ``kind`` metadata of the centroids files this tokenizer writes and accepts.
    centroids_kind: ClassVar[str] = "kmeans"

    quantizer: KMeansQuantizer | LinearQuantizer | None = None
    dedup: bool = False

    @abstractmethod
    def features(
        self,
        waveform: torch.Tensor,  # [B, S] float at self.sample_rate
        lengths: torch.Tensor | None = None,  # [B] valid samples per row
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(features [B, T, D] float32, frame_lengths [B] long)``; padding frames are 0."""

    @abstractmethod
    def centroids_metadata(self) -> dict[str, str]:
        """Metadata stored with centroids fitted on this tokenizer's features."""

    # ------------------------------------------------------------------ helpers
    def _require_quantizer(self) -> KMeansQuantizer | LinearQuantizer:
        if self.quantizer is None:
            raise ValueError(
                f"{type(self).__name__} has no quantizer: set tokenizer.{self.quantizer_key} to a quantizer file "
                f"(fit one with `diffuspeech fit-quantizer`)"
            )
        return self.quantizer

    @staticmethod
    def _checked(waveform: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate ``[B, S]`` input; return it as float with ``lengths [B]`` long (on CPU)."""
        if waveform.dim() == 1:
            waveform = waveform[None]
        if waveform.dim() != 2:
            raise ValueError(f"waveform must have shape [batch, samples], got {tuple(waveform.shape)}")
        if lengths is None:
            lengths = torch.full((waveform.shape[0],), waveform.shape[1], dtype=torch.long)
        lengths = lengths.to("cpu", torch.long).reshape(-1)
        if lengths.numel() != waveform.shape[0]:
            raise ValueError(f"lengths has {lengths.numel()} entries for a batch of {waveform.shape[0]}")
        if bool((lengths > waveform.shape[1]).any()) or bool((lengths < 0).any()):
            raise ValueError(f"lengths must lie in [0, {waveform.shape[1]}], got {lengths.tolist()}")
        for i, n in enumerate(lengths.tolist()):
            check_waveform(waveform[i, :n], f"waveform row {i}")
        return waveform.float(), lengths

    # ------------------------------------------------------------------ encoding
    @torch.no_grad()
    def encode_frames(
        self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One unit per frame, before any deduplication: ``(units [B, T], lengths [B])``."""
        quantizer = self._require_quantizer()
        feats, frame_lengths = self.features(waveform, lengths)  # [B, T, D], [B] on the tokenizer's device
        units = quantizer(feats)  # [B, T]
        return units.to(waveform.device), frame_lengths.to(waveform.device)

    def encode(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        units, unit_lengths = self.encode_frames(waveform, lengths)
        if self.dedup:
            units, _, unit_lengths = dedup_units(units, unit_lengths)
        return units, unit_lengths.to(units.device)

    def encode_with_durations(
        self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Deduplicated units with durations: ``(units [B, T'], durations [B, T'] frames, lengths [B])``."""
        units, unit_lengths = self.encode_frames(waveform, lengths)
        return dedup_units(units, unit_lengths)

    def encode_file(self, path: str | os.PathLike) -> torch.Tensor:
        """Read (resample, downmix) an audio file and return its units ``[T]``."""
        return self.encode_one(load_audio(path, self.sample_rate))
