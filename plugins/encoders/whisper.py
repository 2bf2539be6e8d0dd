"""``whisper`` encoder: a local transformers Whisper folder (``WhisperModel`` or
``WhisperForConditionalGeneration``, safetensors), its encoder's hidden states.

    encoder: {name: whisper, path: /models/whisper-small}    # frozen by default

Only the encoder's weights are read (``encoder.*`` / ``model.encoder.*`` keys). Audio is padded
to Whisper's window (30 s for the released models: ``max_source_positions`` x 2 mel frames of
10 ms) exactly as ``WhisperFeatureExtractor`` does, and the features are cut back to the clip's
own frames (50 per second); a longer clip is refused with a message. Without ``path``,
``preset`` builds a randomly initialised encoder of a released shape (for shape checks and
``device: meta`` builds; e.g. DIFFA's Whisper-small)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from diffuspeech.backbone import parse_dtype
from diffuspeech.encoder import EncoderOutput, SpeechEncoder
from diffuspeech.errors import ModelError

# released encoder shapes (transformers WhisperConfig fields)
PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 6, "encoder_ffn_dim": 1536},
    "base": {"d_model": 512, "encoder_layers": 6, "encoder_attention_heads": 8, "encoder_ffn_dim": 2048},
    "small": {"d_model": 768, "encoder_layers": 12, "encoder_attention_heads": 12, "encoder_ffn_dim": 3072},
    "medium": {"d_model": 1024, "encoder_layers": 24, "encoder_attention_heads": 16, "encoder_ffn_dim": 4096},
    "large-v3": {"d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120, "num_mel_bins": 128},
}
HOP = 160  # samples per mel frame at 16 kHz; two mel frames per encoder frame (stride-2 conv)


class WhisperSpeechEncoder(SpeechEncoder):
    window_hint = "Whisper's window is fixed by encoder.path's max_source_positions: cut the clip into pieces that fit"

    @dataclass
    class Config:
        path: Optional[str] = None  # local Whisper folder (config.json + *.safetensors); None = `preset`, random weights
        preset: str = "small"  # shape when path is None: tiny | base | small | medium | large-v3
        dtype: str = "float32"  # float32 | bfloat16
        device: Optional[str] = None  # build on this device ("meta": shapes only, no memory)
        trainable: bool = False  # DIFFA keeps Whisper frozen

    @classmethod
    def check_config(cls, config: WhisperSpeechEncoder.Config, path: str) -> None:
        parse_dtype(config.dtype, path)
        if config.path is None and config.preset not in PRESETS:
            raise ValueError(f"{path}.preset: unknown preset {config.preset!r}; valid: {', '.join(PRESETS)}")

    def __init__(self, config: Optional[WhisperSpeechEncoder.Config] = None) -> None:
        super().__init__(config)
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        c = self.config
        self.check_config(c, "encoder")
        dtype = parse_dtype(c.dtype, "encoder")
        if c.path is not None:
            folder = Path(c.path)
            if not (folder / "config.json").is_file():
                raise ModelError(f"encoder.path: {folder} is not a Whisper folder (no config.json); save one with transformers' save_pretrained")
            hf_config = WhisperConfig.from_pretrained(str(folder))
        else:
            hf_config = WhisperConfig(**PRESETS[c.preset])
        device = torch.device(c.device) if c.device else None
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self.whisper = WhisperEncoder(hf_config).to(dtype)
        if c.path is not None:
            self.whisper.load_state_dict(_encoder_weights(Path(c.path)), strict=True)
        self.whisper.eval()
        self.window = int(hf_config.max_source_positions) * 2 * HOP  # samples in Whisper's window
        self.extractor = _feature_extractor(Path(c.path) if c.path else None, hf_config.num_mel_bins, self.window)
        self.requires_grad_(bool(c.trainable))

    def train(self, mode: bool = True) -> WhisperSpeechEncoder:
        super().train(mode and self.trainable)  # a frozen encoder stays in eval mode (no dropout)
        return self

    @property
    def sample_rate(self) -> int:
        return 16000

    @property
    def frame_rate(self) -> float:
        return 50.0

    @property
    def feature_size(self) -> int:
        return int(self.whisper.config.d_model)

    @property
    def num_layers(self) -> int:
        return int(self.whisper.config.encoder_layers) + 1

    @property
    def max_samples(self) -> Optional[int]:
        return self.window

    def output_lengths(self, num_samples: torch.Tensor) -> torch.Tensor:
        mel = torch.as_tensor(num_samples, dtype=torch.long) // HOP  # mel frames of the clip
        return torch.clamp((mel + 1) // 2, min=1)  # after the stride-2 conv

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        lengths = lengths.long()
        for i, n in enumerate(lengths.tolist()):
            self.check_audio(int(n), f"audio row {i}")
        clips = [waveform[i, : int(n)].float().cpu().numpy() for i, n in enumerate(lengths.tolist())]
        feats = self.extractor(clips, sampling_rate=16000, return_tensors="pt", padding="max_length", max_length=self.window).input_features
        param = next(self.whisper.parameters())
        out = self.whisper(feats.to(device=param.device, dtype=param.dtype), output_hidden_states=True)
        frames = self.output_lengths(lengths).to(param.device)  # [B]
        t = int(frames.max())
        return EncoderOutput(hidden=[h[:, :t] for h in out.hidden_states], lengths=frames)


def _feature_extractor(folder: Optional[Path], n_mels: int, window: int) -> Any:
    from transformers import WhisperFeatureExtractor

    if folder is not None and (folder / "preprocessor_config.json").is_file():
        fe = WhisperFeatureExtractor.from_pretrained(str(folder))
    else:
        fe = WhisperFeatureExtractor(feature_size=n_mels)
    fe.n_samples = window  # the window of this encoder (30 s for released models)
    fe.nb_max_frames = window // HOP
    return fe


def _encoder_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The encoder's tensors from a Whisper folder's safetensors (single file or shards), prefixes stripped."""
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted({folder / f for f in json.loads(index.read_text())["weight_map"].values()})
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelError(
            f"encoder.path: {folder} has no *.safetensors weights (pickled .bin files are not read); "
            "convert it with transformers: WhisperModel.from_pretrained(path).save_pretrained(path, safe_serialization=True)"
        )
    out: dict[str, torch.Tensor] = {}
    for f in files:
        for key, value in load_file(str(f)).items():
            for prefix in ("model.encoder.", "encoder."):
                if key.startswith(prefix):
                    out[key[len(prefix):]] = value
                    break
    if not out:
        raise ModelError(f"encoder.path: {folder}: no encoder weights (keys encoder.* or model.encoder.*) in {[f.name for f in files]}")
    return out
