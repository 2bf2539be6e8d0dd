"""``griffinlim``: a training-free baseline vocoder for ``mel_kmeans`` units.

Each unit id is replaced by its k-means centroid (a mean log-mel frame), the frame
sequence is optionally smoothed and interpolated to a finer hop, the mel spectrogram is
inverted to a linear magnitude with torchaudio's ``InverseMelScale``, optionally sharpened
(``magnitude_power`` > 1: the magnitude raised to a power before phase recovery, the Tacotron
remedy for Griffin-Lim's noisy reconstruction of a smooth mel envelope) and the phase is
recovered with fast Griffin-Lim (the iteration of torchaudio's ``griffinlim``, with a choice of
initial phase law). Output length = frames * hop_length.

The centroids file is the one the ``mel_kmeans`` tokenizer writes: safetensors with a
float32 tensor ``centroids [K, n_mels]`` (raw log-mel space) and string metadata
``mel_config`` (``MelConfig.to_json()``), ``kind`` = ``"mel_kmeans"``, ``num_units`` = ``str(K)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from safetensors import safe_open

from diffuspeech.errors import UserError
from diffuspeech.mel import MelConfig
from diffuspeech.vocoder import Vocoder, check_compatible, validate_units


class CentroidsFileError(UserError):
    """A centroids file that is missing or not in the ``mel_kmeans`` format."""


def load_mel_centroids(path: str | Path) -> tuple[torch.Tensor, MelConfig]:
    """Read a ``mel_kmeans`` centroids file: ``(centroids [K, n_mels] float32, MelConfig)``."""
    path = Path(path)
    if not path.is_file():
        raise CentroidsFileError(
            f"griffinlim: centroids file not found: {path} (set vocoder.path to the .safetensors file the "
            f"mel_kmeans tokenizer wrote)"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
            if "centroids" not in keys:
                raise CentroidsFileError(f"griffinlim: {path} has no tensor 'centroids' (tensors: {keys})")
            centroids = f.get_tensor("centroids").float()
    except CentroidsFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises several error types
        raise CentroidsFileError(f"griffinlim: {path} is not a readable safetensors file: {exc}") from None
    kind = meta.get("kind")
    if kind != "mel_kmeans":
        raise CentroidsFileError(
            f"griffinlim: {path} has metadata kind={kind!r}; griffinlim needs the centroids of a 'mel_kmeans' "
            f"tokenizer (log-mel k-means)"
        )
    if "mel_config" not in meta:
        raise CentroidsFileError(f"griffinlim: {path} lacks the 'mel_config' metadata (MelConfig.to_json())")
    mel = MelConfig.from_json(meta["mel_config"])
    if centroids.dim() != 2 or centroids.shape[1] != mel.n_mels:
        raise CentroidsFileError(
            f"griffinlim: {path}: centroids must be [K, n_mels={mel.n_mels}], got {tuple(centroids.shape)}"
        )
    declared = meta.get("num_units")
    if declared is not None and int(declared) != centroids.shape[0]:
        raise CentroidsFileError(
            f"griffinlim: {path}: metadata num_units={declared} but the file holds {centroids.shape[0]} centroids"
        )
    return centroids, mel


class GriffinLimVocoder(Vocoder):
    """Units -> centroid log-mel frames -> InverseMelScale -> GriffinLim."""

    @dataclass
    class Config:
        path: str = ""  # centroids .safetensors written by the mel_kmeans tokenizer
        n_iter: int = 64  # Griffin-Lim iterations (more = cleaner phase, slower)
        momentum: float = 0.99  # fast Griffin-Lim momentum in [0, 1); 0 = classic Griffin-Lim
        smooth_frames: int = 3  # odd moving-average window over unit frames (log-mel); 1 = no smoothing
        upsample: int = 4  # interpolate frames this many times finer; Griffin-Lim runs at hop_length / upsample
        random_phase: bool = True  # random initial phase (seeded below) instead of zero phase
        phase_init: str = "torchaudio"  # random phase law: "torchaudio" (its rand_init: phases in [0, pi/2]) | "uniform" ([0, 2 pi))
        magnitude_power: float = 1.0  # linear magnitude ** this before Griffin-Lim; > 1 sharpens (1.3 for the toy task); 1 = off
        seed: int = 0  # seed of the initial phase: the same units always give the same audio
        peak: float = 0.0  # rescale each row so its peak amplitude is this; 0 = keep the reconstructed level
        device: str = "cpu"  # torch device for the reconstruction

    def __init__(self, config: GriffinLimVocoder.Config | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        if not cfg.path:
            raise CentroidsFileError(
                "vocoder.path is empty: griffinlim needs the centroids file of a mel_kmeans tokenizer"
            )
        if cfg.smooth_frames < 1 or cfg.smooth_frames % 2 == 0:
            raise ValueError(f"vocoder.smooth_frames must be an odd number >= 1, got {cfg.smooth_frames}")
        if not 0.0 <= cfg.momentum < 1.0:
            raise ValueError(f"vocoder.momentum must be in [0, 1), got {cfg.momentum}")
        if cfg.phase_init not in ("torchaudio", "uniform"):
            raise ValueError(f"vocoder.phase_init must be 'torchaudio' or 'uniform', got {cfg.phase_init!r}")
        if not cfg.magnitude_power > 0:
            raise ValueError(f"vocoder.magnitude_power must be > 0, got {cfg.magnitude_power}")
        if cfg.n_iter < 1:
            raise ValueError(f"vocoder.n_iter must be >= 1, got {cfg.n_iter}")
        centroids, mel = load_mel_centroids(cfg.path)
        if cfg.upsample < 1 or mel.hop_length % cfg.upsample != 0:
            raise ValueError(
                f"vocoder.upsample must divide the mel hop_length {mel.hop_length}, got {cfg.upsample}"
            )
        self.mel = mel
        self.device = torch.device(cfg.device)
        self.centroids = centroids.to(self.device)  # [K, n_mels] log-mel
        self.num_units = int(centroids.shape[0])
        self.sample_rate = int(mel.sample_rate)
        self.hop_length = int(mel.hop_length)
        self.frame_rate = float(mel.frame_rate)
        self.predicts_durations = False
        self._rng_devices = [self.device.index or 0] if self.device.type == "cuda" else []
        n_stft = mel.n_fft // 2 + 1
        self.inverse_mel = torchaudio.transforms.InverseMelScale(
            n_stft=n_stft,
            n_mels=mel.n_mels,
            sample_rate=mel.sample_rate,
            f_min=mel.f_min,
            f_max=mel.f_max,
            norm=None,  # must match diffuspeech.mel.mel_transform (torchaudio defaults)
            mel_scale="htk",
        ).to(self.device)
        self.window = torch.hann_window(mel.win_length, device=self.device)  # torchaudio's GriffinLim window

    def check_compatible(self, tokenizer) -> None:
        check_compatible(self, tokenizer)

    def log_mel_frames(self, units: torch.Tensor) -> torch.Tensor:
        """``[T]`` ids -> ``[T * upsample + 1, n_mels]`` smoothed, interpolated log-mel frames."""
        frames = self.centroids[units]  # [T, n_mels]
        k = self.config.smooth_frames
        if k > 1:
            padded = F.pad(frames.T[None], (k // 2, k // 2), mode="replicate")  # [1, n_mels, T + k - 1]
            frames = F.avg_pool1d(padded, kernel_size=k, stride=1)[0].T  # [T, n_mels]
        r = self.config.upsample
        t = frames.shape[0]
        pos = torch.arange(t * r + 1, device=frames.device, dtype=torch.float32) / r  # centres, in unit frames
        lo = pos.floor().long().clamp(max=t - 1)
        hi = (lo + 1).clamp(max=t - 1)
        w = (pos - lo.float()).clamp(0.0, 1.0)[:, None]  # [T*r+1, 1]
        return frames[lo] * (1.0 - w) + frames[hi] * w  # [T*r+1, n_mels]

    def initial_phase(self, shape: torch.Size) -> torch.Tensor:
        """Seeded initial phase ``[n_stft, F]`` complex (not necessarily unit modulus)."""
        cfg = self.config
        if not cfg.random_phase:
            return torch.ones(shape, dtype=torch.complex64, device=self.device)
        with torch.random.fork_rng(devices=self._rng_devices):
            torch.manual_seed(cfg.seed)
            if cfg.phase_init == "uniform":
                return torch.polar(torch.ones(shape, device=self.device), 2 * torch.pi * torch.rand(shape, device=self.device))
            # torchaudio's rand_init: real and imaginary parts uniform in [0, 1)
            return torch.rand(shape, dtype=torch.complex64, device=self.device)

    def griffin_lim(self, magnitude: torch.Tensor, length: int) -> torch.Tensor:
        """Fast Griffin-Lim (Perraudin et al. 2013), the iteration of ``torchaudio.functional.griffinlim``:
        ``[n_stft, F]`` magnitude -> ``[length]`` waveform."""
        cfg, mel = self.config, self.mel
        stft = dict(n_fft=mel.n_fft, hop_length=mel.hop_length // cfg.upsample, win_length=mel.win_length, window=self.window)
        momentum = cfg.momentum / (1 + cfg.momentum)
        angles = self.initial_phase(magnitude.shape)
        previous = None
        for _ in range(cfg.n_iter):
            inverse = torch.istft(magnitude * angles, length=length, **stft)
            rebuilt = torch.stft(inverse, center=True, pad_mode="reflect", normalized=False, onesided=True,
                                 return_complex=True, **stft)
            angles = rebuilt if previous is None or not momentum else rebuilt - previous * momentum
            angles = angles / (angles.abs() + 1e-16)
            previous = rebuilt
        return torch.istft(magnitude * angles, length=length, **stft)

    @torch.no_grad()
    def decode(
        self,
        units: torch.Tensor,  # [B, T] ids in [0, num_units)
        lengths: torch.Tensor | None = None,  # [B] valid frames per row
    ) -> tuple[torch.Tensor, torch.Tensor]:
        units, lengths = validate_units(units, lengths, self.num_units, min_frames=1, who="griffinlim")
        units, lengths = units.to(self.device), lengths.to(self.device)
        sample_lengths = lengths * self.hop_length  # [B]
        out = torch.zeros(units.shape[0], int(sample_lengths.max()), device=self.device)  # [B, S]
        for b in range(units.shape[0]):  # rows are independent: a row's audio never depends on the batch
            n = int(sample_lengths[b])
            log_mel = self.log_mel_frames(units[b, : int(lengths[b])])  # [F, n_mels]
            magnitude = self.inverse_mel(log_mel.exp().T)  # [n_stft, F] linear magnitude
            if self.config.magnitude_power != 1.0:
                magnitude = magnitude.pow(self.config.magnitude_power)
            wav = self.griffin_lim(magnitude, n)  # [n]
            if self.config.peak > 0:
                wav = wav * (self.config.peak / wav.abs().max().clamp_min(1e-8))
            out[b, :n] = wav
        return out, sample_lengths.long()
