"""``unit_hifigan``: discrete units -> waveform with speechbrain's UnitHifiganGenerator.

Loads a checkpoint (``path``: diffuspeech / speechbrain / CodeHiFiGAN formats, see
``unit_hifigan_formats``) or, without ``path``, builds a freshly initialised generator from
an architecture ``preset`` plus ``arch`` overrides (for training and benchmarks).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from diffuspeech.vocoder import Vocoder, VocoderInputError, check_compatible, validate_units

from .arch import PRESETS, UnitHifigan, UnitHifiganArch, preset
from .formats import load_unit_hifigan


class UnitHifiganVocoder(Vocoder):
    """Unit HiFi-GAN vocoder; ``decode`` accepts frame-rate units (or deduplicated ones with durations predicted)."""

    @dataclass
    class Config:
        path: str = ""  # checkpoint folder or file; "" = new generator from `preset` + `arch` (random weights)
        format: str = "auto"  # auto | diffuspeech | speechbrain | codehifigan
        checkpoint: str = ""  # weights file name inside `path` when the folder holds several
        num_units: int = 0  # expected codebook size K; 0 = take it from the checkpoint (required without path)
        preset: str = "base25hz"  # architecture preset when path is "": tiny | base25hz
        arch: dict[str, Any] = field(default_factory=dict)  # overrides of UnitHifiganArch fields (no path only)
        duration_prediction: bool = False  # deduplicate units and expand them with the predicted durations
        speaker_id: int = 0  # speaker of multi-speaker checkpoints
        style_id: int = 0  # style of multi-style checkpoints
        remove_weight_norm: bool = True  # fold weight norm into the weights for faster inference
        device: str = "cpu"  # torch device

    def __init__(self, config: UnitHifiganVocoder.Config | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.device = torch.device(cfg.device)
        if cfg.path:
            if cfg.arch:
                raise ValueError("vocoder.arch overrides apply to new generators only; remove them or vocoder.path")
            model, self.format = load_unit_hifigan(cfg.path, cfg.format, cfg.checkpoint)
            if cfg.num_units and cfg.num_units != model.arch.num_units:
                raise VocoderInputError(
                    f"vocoder.num_units={cfg.num_units} but the checkpoint {cfg.path} decodes "
                    f"{model.arch.num_units} units: it was trained for a different tokenizer"
                )
        else:
            if cfg.num_units < 1:
                raise ValueError("vocoder.num_units must be set (the tokenizer's codebook size) when vocoder.path is empty")
            if cfg.preset not in PRESETS:
                raise ValueError(f"vocoder.preset: unknown preset {cfg.preset!r}; presets: {', '.join(PRESETS)}")
            fields = {f.name for f in dataclasses.fields(UnitHifiganArch)} - {"num_units"}
            unknown = sorted(set(cfg.arch) - fields)
            if unknown:
                raise ValueError(f"vocoder.arch: unknown keys {unknown}; valid keys: {sorted(fields)}")
            model, self.format = UnitHifigan(preset(cfg.preset, num_units=cfg.num_units, **dict(cfg.arch))), "new"
        if cfg.duration_prediction and not model.arch.duration_predictor:
            raise ValueError(
                "vocoder.duration_prediction=true but this generator has no duration predictor; "
                "feed frame-rate (not deduplicated) units with duration_prediction=false"
            )
        model.condition(1, torch.tensor([cfg.speaker_id]), torch.tensor([cfg.style_id]))  # range check now
        if cfg.remove_weight_norm:
            model.generator.remove_weight_norm()
        self.model = model.to(self.device).eval()
        self.arch: UnitHifiganArch = model.arch
        self.num_units = self.arch.num_units
        self.sample_rate = self.arch.sample_rate
        self.hop_length = self.arch.hop_length
        self.frame_rate = self.arch.frame_rate
        self.predicts_durations = bool(cfg.duration_prediction)

    def check_compatible(self, tokenizer) -> None:
        check_compatible(self, tokenizer)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def _expand_durations(self, units: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Deduplicate each row and repeat every unit by its predicted duration: ``[B, T''], [B]``."""
        rows = []
        for b in range(units.shape[0]):
            dedup = torch.unique_consecutive(units[b, : int(lengths[b])])  # [T']
            if dedup.numel() < self.arch.min_frames:
                raise VocoderInputError(
                    f"unit_hifigan: row {b} has {dedup.numel()} distinct consecutive units; the generator needs "
                    f"at least {self.arch.min_frames}"
                )
            rows.append(torch.repeat_interleave(dedup, self.model.predict_durations(dedup)))
        new_lengths = torch.tensor([r.numel() for r in rows], device=units.device)
        out = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # [B, T'']
        return out, new_lengths

    @torch.no_grad()
    def decode(
        self,
        units: torch.Tensor,  # [B, T] ids in [0, num_units)
        lengths: torch.Tensor | None = None,  # [B] valid frames per row
    ) -> tuple[torch.Tensor, torch.Tensor]:
        need = 1 if self.predicts_durations else self.arch.min_frames
        units, lengths = validate_units(units, lengths, self.num_units, min_frames=need, who="unit_hifigan")
        units, lengths = units.to(self.device), lengths.to(self.device)
        if self.predicts_durations:
            units, lengths = self._expand_durations(units, lengths)
        speaker = torch.tensor([self.config.speaker_id], device=self.device)
        style = torch.tensor([self.config.style_id], device=self.device)
        wav, sample_lengths = self.model.synthesize(units, lengths, speaker, style)  # [B, S], [B]
        return wav.float(), sample_lengths.long()
