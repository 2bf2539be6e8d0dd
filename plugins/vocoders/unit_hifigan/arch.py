"""Unit HiFi-GAN architecture: settings, presets, and the module built on speechbrain.

The network is speechbrain's ``UnitHifiganGenerator`` (embedding ids shifted by +1, so
its vocabulary is ``num_units + 1``). :class:`UnitHifigan` wraps it with what the
fairseq/textlesslib CodeHiFiGAN adds on top: a speaker-id table (and a style-id table)
whose vectors are concatenated to every frame, and optionally the CodeHiFiGAN duration
predictor (speechbrain's lacks its LayerNorms). The batched inference path
(:meth:`UnitHifigan.synthesize`) handles rows of different lengths and duration
prediction per row, which speechbrain's ``inference`` (batch of one) does not.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

# speechbrain is imported inside the methods that build or run the generator: importing it
# costs ~2 s (scipy, its data pipeline), which plugin registration must not pay.

PADDING_MODES = ("reflect", "zeros")
DURATION_PREDICTORS = ("speechbrain", "codehifigan")


@dataclass
class UnitHifiganArch:
    """Everything needed to rebuild a unit HiFi-GAN generator (stored next to its weights)."""

    num_units: int = 0  # K: unit ids in [0, K); speechbrain's embedding has K + 1 rows (ids shifted by +1)
    sample_rate: int = 16000  # Hz of the output waveform
    embedding_dim: int = 128  # unit embedding width
    upsample_initial_channel: int = 512  # channels after conv_pre; halved by every upsampling layer
    upsample_factors: list[int] = field(default_factory=lambda: [5, 4, 4, 4, 2])  # product = hop (samples per unit)
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [11, 8, 8, 8, 4])  # one per factor; k - u even
    resblock_type: str = "1"  # HiFi-GAN residual block type: "1" (3 dilated convs + 3 convs) or "2"
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])  # multi-receptive-field kernels
    resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    pooling_type: str = "none"  # speechbrain codebook pooling: none | sum | attention (one codebook: all identical)
    duration_predictor: str = ""  # "" (none) | speechbrain | codehifigan (with LayerNorms)
    var_pred_hidden_dim: int = 128  # duration predictor channels
    var_pred_kernel_size: int = 3  # duration predictor kernel
    var_pred_dropout: float = 0.5  # duration predictor dropout (training only)
    num_speakers: int = 0  # > 0: speaker-id table (speaker_dim wide) concatenated to every frame
    speaker_dim: int = 0  # width of a speaker vector (CodeHiFiGAN: embedding_dim)
    num_styles: int = 0  # > 0: style-id table (style_dim wide) concatenated after the speaker vector
    style_dim: int = 0  # width of a style vector
    padding_mode: str = "reflect"  # 'same' conv padding: reflect (speechbrain) | zeros (fairseq/textlesslib)

    @property
    def hop_length(self) -> int:
        return math.prod(self.upsample_factors)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def min_frames(self) -> int:
        """Shortest unit sequence the generator accepts (reflect padding of conv_pre, kernel 7)."""
        return 4 if self.padding_mode == "reflect" else 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> UnitHifiganArch:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown unit HiFi-GAN architecture keys {unknown}; valid keys: {sorted(known)}")
        return cls(**data)

    def validate(self, where: str = "vocoder") -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"{where}: {msg}")

        if self.num_units < 1:
            bad(f"num_units must be >= 1 (the tokenizer's codebook size), got {self.num_units}")
        if len(self.upsample_factors) != len(self.upsample_kernel_sizes) or not self.upsample_factors:
            bad("upsample_factors and upsample_kernel_sizes need one entry per upsampling layer")
        for u, k in zip(self.upsample_factors, self.upsample_kernel_sizes):
            if u < 1 or k < u or (k - u) % 2:
                bad(f"upsampling layer (factor {u}, kernel {k}): need kernel >= factor with kernel - factor even "
                    f"so that every unit becomes exactly prod(upsample_factors) samples")
        if self.upsample_initial_channel % (2 ** len(self.upsample_factors)):
            bad(f"upsample_initial_channel {self.upsample_initial_channel} must be divisible by "
                f"2**{len(self.upsample_factors)} (channels halve at every upsampling layer)")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            bad("resblock_kernel_sizes and resblock_dilation_sizes need one entry per residual block")
        need = 3 if self.resblock_type == "1" else 2
        if self.resblock_type not in ("1", "2") or any(len(d) != need for d in self.resblock_dilation_sizes):
            bad(f"resblock_type must be '1' (3 dilations per block) or '2' (2 dilations), got "
                f"{self.resblock_type!r} with {self.resblock_dilation_sizes}")
        if self.pooling_type not in ("none", "sum", "attention"):
            bad(f"pooling_type must be none, sum or attention, got {self.pooling_type!r}")
        if self.duration_predictor not in ("",) + DURATION_PREDICTORS:
            bad(f"duration_predictor must be '' or one of {DURATION_PREDICTORS}, got {self.duration_predictor!r}")
        if self.padding_mode not in PADDING_MODES:
            bad(f"padding_mode must be one of {PADDING_MODES}, got {self.padding_mode!r}")
        if (self.num_speakers > 0) != (self.speaker_dim > 0) or (self.num_styles > 0) != (self.style_dim > 0):
            bad("set num_speakers with speaker_dim (and num_styles with style_dim) together")


PRESETS: dict[str, UnitHifiganArch] = {
    # ~0.1M parameters: trains on a laptop CPU in minutes (16 kHz, hop 640 = 25 units/s).
    "tiny": UnitHifiganArch(
        embedding_dim=32,
        upsample_initial_channel=64,
        upsample_factors=[10, 8, 8],
        upsample_kernel_sizes=[20, 16, 16],
        resblock_kernel_sizes=[3, 7],
        resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
    ),
    # ~14M parameters, HiFi-GAN V1 widths for 25 Hz units at 16 kHz (hop 5*4*4*4*2 = 640).
    "base25hz": UnitHifiganArch(embedding_dim=256),
}


def preset(name: str, **overrides) -> UnitHifiganArch:
    if name not in PRESETS:
        raise ValueError(f"unknown unit HiFi-GAN preset {name!r}; presets: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


class CodeHifiganDurationPredictor(nn.Module):
    """The CodeHiFiGAN (fairseq/textlesslib) duration predictor: ``[B, T, C] -> [B, T]`` log(1 + duration).

    Two (conv -> ReLU -> LayerNorm -> dropout) stages and a linear projection; module names
    follow that checkpoint format (``conv1.0``, ``ln1``, ``conv2.0``, ``ln2``, ``proj``).
    """

    def __init__(self, in_dim: int, hidden_dim: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv1d(in_dim, hidden_dim, kernel_size, padding=(kernel_size - 1) // 2), nn.ReLU())
        self.ln1 = nn.LayerNorm(hidden_dim)
        # That format pads the second conv by 1 whatever the kernel; kept for weight compatibility.
        self.conv2 = nn.Sequential(nn.Conv1d(hidden_dim, hidden_dim, kernel_size, padding=1), nn.ReLU())
        self.ln2 = nn.LayerNorm(hidden_dim)
        self.proj = nn.Linear(hidden_dim, 1)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, T, C]
        h = self.conv1(x.transpose(1, 2)).transpose(1, 2)  # [B, T, H]
        h = F.dropout(self.ln1(h), self.dropout, self.training)
        h = self.conv2(h.transpose(1, 2)).transpose(1, 2)  # [B, T, H]
        h = F.dropout(self.ln2(h), self.dropout, self.training)
        return self.proj(h).squeeze(-1)  # [B, T]


class UnitHifigan(nn.Module):
    """speechbrain ``UnitHifiganGenerator`` + optional speaker/style tables; see module doc."""

    def __init__(self, arch: UnitHifiganArch) -> None:
        from speechbrain.lobes.models.HifiGAN import UnitHifiganGenerator
        from speechbrain.nnet.CNN import Conv1d as SBConv1d

        super().__init__()
        arch.validate()
        self.arch = arch
        cond = arch.speaker_dim + arch.style_dim  # per-utterance vector concatenated to every frame
        self.generator = UnitHifiganGenerator(
            in_channels=arch.embedding_dim + cond,
            out_channels=1,
            resblock_type=arch.resblock_type,
            resblock_dilation_sizes=[list(d) for d in arch.resblock_dilation_sizes],
            resblock_kernel_sizes=list(arch.resblock_kernel_sizes),
            upsample_kernel_sizes=list(arch.upsample_kernel_sizes),
            upsample_initial_channel=arch.upsample_initial_channel,
            upsample_factors=list(arch.upsample_factors),
            vocab_size=arch.num_units + 1,
            embedding_dim=arch.embedding_dim,
            duration_predictor=arch.duration_predictor == "speechbrain",
            var_pred_hidden_dim=arch.var_pred_hidden_dim,
            var_pred_kernel_size=arch.var_pred_kernel_size,
            var_pred_dropout=arch.var_pred_dropout,
            multi_speaker=cond > 0,
            pooling_type=arch.pooling_type,
        )
        if arch.duration_predictor == "codehifigan":
            self.generator.duration_predictor = True
            self.generator.var_predictor = CodeHifiganDurationPredictor(
                arch.embedding_dim, arch.var_pred_hidden_dim, arch.var_pred_kernel_size, arch.var_pred_dropout
            )
        if arch.padding_mode == "zeros":
            for module in self.generator.modules():
                if isinstance(module, SBConv1d):
                    module.padding_mode = "constant"  # F.pad(mode="constant") pads with zeros
        self.speakers = nn.Embedding(arch.num_speakers, arch.speaker_dim) if arch.num_speakers > 0 else None
        self.styles = nn.Embedding(arch.num_styles, arch.style_dim) if arch.num_styles > 0 else None

    @property
    def hop_length(self) -> int:
        return self.arch.hop_length

    def condition(self, batch: int, speaker: torch.Tensor | None, style: torch.Tensor | None) -> torch.Tensor | None:
        """Per-row conditioning vector ``[B, speaker_dim + style_dim]`` or None."""
        parts = []
        device = self.generator.unit_embedding.weight.device
        for table, ids, what in ((self.speakers, speaker, "speaker"), (self.styles, style, "style")):
            if table is None:
                continue
            ids = torch.zeros(batch, dtype=torch.long, device=device) if ids is None else ids.to(device).long()
            if bool(((ids < 0) | (ids >= table.num_embeddings)).any()):
                raise ValueError(f"{what} id {ids.tolist()} out of range [0, {table.num_embeddings})")
            parts.append(table(ids.expand(batch)))  # [B, dim]
        return torch.cat(parts, dim=-1) if parts else None

    def embed(self, units: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` ids in [0, K) -> ``[B, T, D]`` (speechbrain's +1 shift; one codebook, so pooling is identity)."""
        return self.generator.unit_embedding(units + 1)

    def forward_train(
        self, units: torch.Tensor, speaker: torch.Tensor | None = None, style: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor | None, torch.Tensor | None]]:
        """Training forward on frame-rate units ``[B, T]``: ``(wav [B, 1, T * hop], (log_dur_pred, log_dur))``."""
        cond = self.condition(units.shape[0], speaker, style)
        wav, durations = self.generator(units[..., None] + 1, spk=cond)
        return wav, durations

    def predict_durations(self, units: torch.Tensor) -> torch.Tensor:
        """``[T']`` deduplicated ids -> ``[T']`` predicted frames per unit (>= 1)."""
        log_dur = self.generator.var_predictor(self.embed(units[None]))  # [1, T']
        return torch.clamp(torch.round(torch.exp(log_dur) - 1).long(), min=1)[0]

    def synthesize(
        self,
        units: torch.Tensor,  # [B, T] ids; frames beyond lengths are ignored
        lengths: torch.Tensor,  # [B]
        speaker: torch.Tensor | None = None,  # [B] or [1] speaker ids
        style: torch.Tensor | None = None,  # [B] or [1] style ids
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched inference: ``(wav [B, max_len * hop], sample_lengths [B])``.

        Each row is padded with its own last unit (not zeros), so a row's audio inside its
        length barely depends on the other rows of the batch.
        """
        batch, frames = units.shape
        idx = torch.arange(frames, device=units.device)[None, :]  # [1, T]
        last = units.gather(1, (lengths - 1).clamp(min=0)[:, None])  # [B, 1]
        padded = torch.where(idx < lengths[:, None], units, last)  # [B, T]
        x = self.embed(padded).transpose(1, 2)  # [B, D, T]
        cond = self.condition(batch, speaker, style)
        if cond is not None:
            x = torch.cat([x, cond[:, :, None].expand(-1, -1, frames)], dim=1)  # [B, D + C, T]
        from speechbrain.lobes.models.HifiGAN import HifiganGenerator

        wav = HifiganGenerator.forward(self.generator, x)[:, 0]  # [B, T * hop]
        sample_lengths = lengths * self.hop_length
        valid = torch.arange(wav.shape[1], device=wav.device)[None, :] < sample_lengths[:, None]
        return wav * valid, sample_lengths
