"""``mel`` encoder: log-mel frames, optionally through a small conv stack; needs no pretrained weights.

With ``conv_layers: 0`` the one layer is the (per-utterance mean/variance normalised) log-mel;
otherwise the layers are the outputs of ``conv_layers`` ``Conv1d(k=3) + GELU`` blocks of width
``conv_width`` over it (every layer has one width; randomly initialised from ``seed``, frozen
unless ``trainable: true``). Frames come every ``hop_length`` samples:
16000 / 320 = 50 frames/s, Whisper's rate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from diffuspeech.encoder import EncoderOutput, SpeechEncoder
from diffuspeech.mel import MelConfig, log_mel, mel_transform


class MelEncoder(SpeechEncoder):
    window_hint = "cut the clip, or raise encoder.max_seconds (null: no limit)"

    @dataclass
    class Config:
        sample_rate: int = 16000  # Hz of the waveform
        n_mels: int = 80  # mel bands (the feature width when conv_layers is 0)
        n_fft: int = 400  # FFT size (25 ms)
        hop_length: int = 320  # samples per frame: 16000 / 320 = 50 frames/s
        normalize: bool = True  # per-utterance mean/variance normalisation of each band (speaker-robust)
        conv_layers: int = 0  # Conv1d(k=3) + GELU blocks after the log-mel (0 = log-mel only)
        conv_width: int = 256  # their width (the feature width when conv_layers > 0)
        max_seconds: Optional[float] = None  # longest clip accepted (None: any length)
        trainable: bool = False  # train the conv stack with the adapters
        seed: int = 0  # initialisation of the conv stack

    @classmethod
    def check_config(cls, config: MelEncoder.Config, path: str) -> None:
        for key in ("sample_rate", "n_mels", "n_fft", "hop_length", "conv_width"):
            if int(getattr(config, key)) <= 0:
                raise ValueError(f"{path}.{key}: expected a positive integer, got {getattr(config, key)}")
        if config.conv_layers < 0:
            raise ValueError(f"{path}.conv_layers: expected >= 0, got {config.conv_layers}")
        if config.max_seconds is not None and config.max_seconds <= 0:
            raise ValueError(f"{path}.max_seconds: expected a positive duration (or null), got {config.max_seconds}")

    def __init__(self, config: Optional[MelEncoder.Config] = None) -> None:
        super().__init__(config)
        c = self.config
        self.check_config(c, "encoder")
        self.mel = MelConfig(sample_rate=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.n_fft, n_mels=c.n_mels,
                             f_max=c.sample_rate / 2)
        self.transform = mel_transform(self.mel)
        gen = torch.Generator().manual_seed(int(c.seed))
        widths = [c.n_mels] + [c.conv_width] * c.conv_layers
        self.convs = nn.ModuleList(nn.Conv1d(widths[i], widths[i + 1], kernel_size=3, padding=1) for i in range(c.conv_layers))
        with torch.no_grad():
            for conv in self.convs:
                conv.weight.normal_(0.0, (2.0 / (3 * conv.in_channels)) ** 0.5, generator=gen)
                conv.bias.zero_()
        self.requires_grad_(bool(c.trainable))

    def check_audio(self, num_samples: int, where: str) -> None:
        super().check_audio(num_samples, where)
        if num_samples <= self.config.n_fft // 2:
            from diffuspeech.encoder import EncoderInputError

            raise EncoderInputError(f"{where}: {num_samples} samples is too short for the encoder (more than {self.config.n_fft // 2} needed)")

    @property
    def sample_rate(self) -> int:
        return int(self.config.sample_rate)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.config.hop_length

    @property
    def feature_size(self) -> int:
        return int(self.config.conv_width if self.config.conv_layers else self.config.n_mels)

    @property
    def num_layers(self) -> int:
        return max(1, int(self.config.conv_layers))

    @property
    def max_samples(self) -> Optional[int]:
        s = self.config.max_seconds
        return None if s is None else int(round(s * self.sample_rate))

    def output_lengths(self, num_samples: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(num_samples, dtype=torch.long) // self.config.hop_length + 1  # centered STFT

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        frames = self.output_lengths(lengths).to(waveform.device)  # [B]
        transform = self.transform.to(waveform.device)
        rows = [log_mel(waveform[i, : int(n)].float(), self.mel, transform) for i, n in enumerate(lengths.tolist())]  # [T_i, M] each
        x = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # [B, T, M]: each clip on its own, as if encoded alone
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < frames[:, None]  # [B, T]
        if self.config.normalize:
            w = valid[..., None].float()  # [B, T, 1]
            mean = (x * w).sum(1, keepdim=True) / w.sum(1, keepdim=True)  # [B, 1, M]
            var = ((x - mean) ** 2 * w).sum(1, keepdim=True) / w.sum(1, keepdim=True)
            x = (x - mean) / (var + 1e-5).sqrt()
        x = x * valid[..., None]
        hidden = [x] if not self.convs else []
        for conv in self.convs:
            x = torch.nn.functional.gelu(conv(x.transpose(1, 2))).transpose(1, 2) * valid[..., None]  # [B, T, W]
            hidden.append(x)
        return EncoderOutput(hidden=hidden, lengths=frames)
