"""Log-mel features shared by the ``mel_kmeans`` tokenizer and the ``griffinlim`` vocoder.

Both sides must agree on every parameter, so they live in one dataclass that is stored
next to any fitted artefact (e.g. as safetensors metadata) and read back from it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import torch
import torchaudio


@dataclass
class MelConfig:
    sample_rate: int = 16000  # Hz of the waveform
    n_fft: int = 1024  # FFT size
    hop_length: int = 640  # samples per frame: 16000 / 640 = 25 frames/s
    win_length: int = 1024  # analysis window
    n_mels: int = 80  # mel bands
    f_min: float = 0.0  # lowest mel band edge, Hz
    f_max: float = 8000.0  # highest mel band edge, Hz
    log_floor: float = 1e-5  # log(max(mel, floor))

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MelConfig:
        return cls(**json.loads(text))


def mel_transform(cfg: MelConfig) -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=cfg.sample_rate,
        n_fft=cfg.n_fft,
        win_length=cfg.win_length,
        hop_length=cfg.hop_length,
        f_min=cfg.f_min,
        f_max=cfg.f_max,
        n_mels=cfg.n_mels,
        power=1.0,  # magnitude mel: Griffin-Lim inverts a magnitude spectrogram
        center=True,
    )


def log_mel(waveform: torch.Tensor, cfg: MelConfig, transform: torchaudio.transforms.MelSpectrogram | None = None) -> torch.Tensor:
    """``[batch, samples]`` (or ``[samples]``) -> ``[batch, frames, n_mels]`` (or ``[frames, n_mels]``).

    frames = samples // hop_length + 1 (centered STFT).
    """
    squeeze = waveform.dim() == 1
    wav = waveform.reshape(1, -1) if squeeze else waveform
    transform = transform or mel_transform(cfg)
    mel = transform(wav.float())  # [B, n_mels, frames]
    out = torch.log(mel.clamp_min(cfg.log_floor)).transpose(1, 2)  # [B, frames, n_mels]
    return out[0] if squeeze else out
