"""``mel_kmeans``: log-mel frames (25 Hz by default) quantized by nearest k-means centroid.

A light baseline that is fitted in seconds on CPU. Its centroids file is shared with the
``griffinlim`` vocoder, which reads each centroid as the mean log-mel frame of its unit::

    centroids  float32 [K, n_mels]   raw log-mel space (diffuspeech.mel.log_mel)
    metadata   kind="mel_kmeans", num_units=str(K), mel_config=MelConfig.to_json()
    optional   feature_mean / feature_std [n_mels]: assignment in standardised space

``assign_units: N`` quantises onto centroids ``[0, N)`` only; ids ``>= N`` are then output-only
units (a model can generate them and the vocoder render them, but no input is read as them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import torch

from diffuspeech.feature_tokenizer import FeatureTokenizer
from diffuspeech.mel import MelConfig, log_mel, mel_transform
from diffuspeech.quantizers import KMeansQuantizer, QuantizerError

KIND = "mel_kmeans"


class MelKMeansTokenizer(FeatureTokenizer):
    """Log-mel + nearest centroid. Without ``path`` it only computes features (for fitting)."""

    quantizer_key = "path"
    centroids_kind = KIND

    @dataclass
    class Config:
        path: Optional[str] = None  # centroids .safetensors from `diffuspeech fit-quantizer`; None: features only
        mel: MelConfig = field(default_factory=MelConfig)  # used when fitting; a centroids file brings its own
        dedup: bool = False  # merge repeated units (durations via encode_with_durations)
        device: str = "cpu"  # where features and assignment run ("cpu", "cuda", "cuda:1", ...)
        # Quantise frames onto the first N centroids only; None = all. The rest are output-only
        # units (the arith recipe keeps the assistant's exact answer frames there for the vocoder,
        # so a question voice that resembles the assistant is not read as answer frames).
        assign_units: Optional[int] = None

    def __init__(self, config: Optional[MelKMeansTokenizer.Config] = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.device = torch.device(cfg.device)
        self.dedup = bool(cfg.dedup)
        self.mel_config: MelConfig = cfg.mel
        self.quantizer = None
        if cfg.path:
            quantizer = KMeansQuantizer.from_file(cfg.path)
            kind = quantizer.metadata.get("kind")
            if kind != KIND:
                raise QuantizerError(
                    f"{cfg.path}: kind={kind!r} but the mel_kmeans tokenizer needs centroids fitted on log-mel "
                    f"features (kind='mel_kmeans'); fit them with `diffuspeech fit-quantizer` and tokenizer name mel_kmeans"
                )
            if "mel_config" not in quantizer.metadata:
                raise QuantizerError(f"{cfg.path}: metadata has no 'mel_config'; refit the centroids")
            file_mel = MelConfig.from_json(quantizer.metadata["mel_config"])
            if cfg.mel != MelConfig() and cfg.mel != file_mel:
                raise QuantizerError(
                    f"tokenizer.mel differs from the mel settings stored in {cfg.path} ({file_mel.to_json()}); "
                    f"remove tokenizer.mel or refit the centroids with it"
                )
            if quantizer.dim != file_mel.n_mels:
                raise QuantizerError(f"{cfg.path}: centroids have {quantizer.dim} dims but mel_config.n_mels={file_mel.n_mels}")
            self.mel_config = file_mel
            if cfg.assign_units is not None:
                if not 1 <= cfg.assign_units <= quantizer.num_units:
                    raise QuantizerError(
                        f"tokenizer.assign_units={cfg.assign_units}: {cfg.path} has {quantizer.num_units} centroids; "
                        f"use a value in [1, {quantizer.num_units}] or null (all)"
                    )
                quantizer.assignable = int(cfg.assign_units)
            self.quantizer = quantizer.to(self.device)
        elif cfg.assign_units is not None:
            raise QuantizerError("tokenizer.assign_units needs tokenizer.path (a centroids file to assign to)")
        self.sample_rate = self.mel_config.sample_rate
        self.frame_rate = self.mel_config.frame_rate
        self.num_units = self.quantizer.num_units if self.quantizer is not None else 0
        self._transform = mel_transform(self.mel_config).to(self.device)

    @torch.no_grad()
    def features(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel ``[B, T, n_mels]`` with T = samples // hop + 1 per row.

        Rows are transformed one by one on their valid samples, so a padded batch gives
        exactly the frames of each utterance alone (the STFT's edge padding sees no zeros).
        """
        wav, lengths = self._checked(waveform, lengths)
        frame_lengths = lengths // self.mel_config.hop_length + 1  # [B]
        out = torch.zeros(wav.shape[0], int(frame_lengths.max()), self.mel_config.n_mels, device=self.device)
        for i, n in enumerate(lengths.tolist()):
            row = wav[i, :n].to(self.device)
            if n < self.mel_config.n_fft // 2 + 1:  # reflect padding needs a little signal
                row = torch.nn.functional.pad(row, (0, self.mel_config.n_fft // 2 + 1 - n))
            frames = log_mel(row, self.mel_config, self._transform)[: int(frame_lengths[i])]  # [T_i, n_mels]
            out[i, : frames.shape[0]] = frames
        return out, frame_lengths

    def with_all_units(self) -> MelKMeansTokenizer:
        """A copy that quantises onto every centroid (``assign_units`` lifted): how output-only
        units are produced from audio, e.g. the arith recipe's answer targets and its resynthesis ceiling."""
        import copy

        clone = copy.copy(self)
        if self.quantizer is not None:
            clone.quantizer = copy.copy(self.quantizer)
            clone.quantizer.assignable = self.quantizer.num_units
        return clone

    def centroids_metadata(self) -> dict[str, str]:
        return {"mel_config": self.mel_config.to_json(), "tokenizer": "mel_kmeans"}

    def __repr__(self) -> str:
        mel = dataclasses.asdict(self.mel_config)
        return f"MelKMeansTokenizer(num_units={self.num_units}, frame_rate={self.frame_rate}, mel={mel})"
