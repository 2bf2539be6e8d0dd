"""``hubert``: transformers HubertModel features at one layer, quantized to units.

* The model is a local transformers folder (``config.json`` + weights); nothing is downloaded.
  Only the transformer layers up to ``layer`` are kept and run.
* 25 Hz comes either from the model itself (mHuBERT-25Hz: 8 conv layers, total stride 640)
  or from averaging pairs of 50 Hz frames (HuBERT-base: total stride 320), see ``pool``.
* The quantizer is a k-means centroids safetensors file or a SpiritLM linear quantizer.
* Long audio is cut into chunks of ``chunk_seconds``; chunks of all rows are batched
  (``max_batch_chunks`` per forward) with padding masks. For models whose first conv layer
  uses group norm (HuBERT-base) the conv front-end runs per chunk, because group norm over
  time would otherwise see the padding: batched results equal unbatched ones.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from diffuspeech.audio import chunk_spans
from diffuspeech.feature_tokenizer import FeatureTokenizer
from diffuspeech.quantizers import KMeansQuantizer, QuantizerError, load_quantizer

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
POOLS = ("auto", "pair", "none")


def load_hubert(path: str | Path, layer: int, device: torch.device, dtype: torch.dtype):
    """Load a HubertModel from a local folder, keep layers ``1..layer``; return (model, config)."""
    from transformers import HubertModel  # deferred: transformers is slow to import
    from transformers.utils import logging as hf_logging

    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"tokenizer.model_path: {folder} is not a folder (expected a transformers HubertModel folder)")
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise ValueError(f"tokenizer.model_path: {folder} has no config.json (save the model with save_pretrained)")
    model_type = json.loads(cfg_file.read_text()).get("model_type")
    if model_type != "hubert":
        raise ValueError(f"tokenizer.model_path: {folder} holds a {model_type!r} model, expected 'hubert'")
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-weight bar is noise next to our own progress
    try:
        model, info = HubertModel.from_pretrained(str(folder), local_files_only=True, output_loading_info=True)
    except OSError as exc:
        raise ValueError(f"tokenizer.model_path: cannot load {folder}: {exc}") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("masked_spec_embed")]
    if missing:
        raise ValueError(f"tokenizer.model_path: {folder}: weights missing from the checkpoint: {', '.join(sorted(missing)[:8])}")
    n_layers = model.config.num_hidden_layers
    if not 0 <= layer <= n_layers:
        raise ValueError(f"tokenizer.layer={layer} is out of range: the model at {folder} has layers 0..{n_layers}")
    model.encoder.layers = model.encoder.layers[:layer]
    if model.config.do_stable_layer_norm:
        # pre-LN models normalise after the last layer only; hidden_states[layer] is taken before that
        model.encoder.layer_norm = torch.nn.Identity()
    return model.to(device=device, dtype=dtype).eval(), model.config


class HubertTokenizer(FeatureTokenizer):
    quantizer_key = "quantizer"
    centroids_kind = "kmeans"

    @dataclass
    class Config:
        model_path: Optional[str] = None  # local transformers HubertModel folder (required)
        layer: int = 11  # features = hidden_states[layer]: output of transformer layer `layer` (0 = its input)
        pool: str = "auto"  # "auto": average frame pairs if the model runs at 50 Hz; "pair"; "none"
        quantizer: Optional[str] = None  # k-means .safetensors or SpiritLM linear quantizer .pt; None: features only
        quantizer_kind: str = "auto"  # "auto" (by file content), "kmeans" or "linear"
        dedup: bool = False  # merge repeated units (durations via encode_with_durations)
        normalize: Optional[bool] = None  # per-utterance zero-mean unit-variance input; None: preprocessor_config.json
        chunk_seconds: float = 30.0  # audio longer than this is encoded in chunks (<= 0: never chunk)
        max_batch_chunks: int = 8  # chunks per forward pass
        device: str = "cpu"  # "cpu", "cuda", "cuda:1", ...
        dtype: str = "float32"  # model weights: float32, float16 or bfloat16

    def __init__(self, config: Optional[HubertTokenizer.Config] = None) -> None:
        super().__init__(config)
        cfg = self.config
        if not cfg.model_path:
            raise ValueError("tokenizer.model_path is required: a local transformers HubertModel folder")
        if cfg.pool not in POOLS:
            raise ValueError(f"tokenizer.pool={cfg.pool!r}; valid: {', '.join(POOLS)}")
        if cfg.dtype not in DTYPES:
            raise ValueError(f"tokenizer.dtype={cfg.dtype!r}; valid: {', '.join(DTYPES)}")
        if cfg.max_batch_chunks < 1:
            raise ValueError(f"tokenizer.max_batch_chunks must be >= 1, got {cfg.max_batch_chunks}")
        self.device = torch.device(cfg.device)
        self.dtype = DTYPES[cfg.dtype]
        self.dedup = bool(cfg.dedup)
        self.model, mcfg = load_hubert(cfg.model_path, cfg.layer, self.device, self.dtype)
        self.hidden_size = int(mcfg.hidden_size)
        self.conv_stride = int(math.prod(mcfg.conv_stride))  # samples per model frame
        self.group_norm_frontend = mcfg.feat_extract_norm == "group"

        pre = Path(cfg.model_path) / "preprocessor_config.json"
        pre_cfg = json.loads(pre.read_text()) if pre.is_file() else {}
        self.sample_rate = int(pre_cfg.get("sampling_rate", 16000))
        self.normalize = bool(pre_cfg.get("do_normalize", False)) if cfg.normalize is None else bool(cfg.normalize)
        native_rate = self.sample_rate / self.conv_stride
        self.pool_pairs = cfg.pool == "pair" or (cfg.pool == "auto" and native_rate > 37.5)  # 50 Hz -> 25 Hz
        self.hop = self.conv_stride * (2 if self.pool_pairs else 1)  # samples per output frame
        self.frame_rate = self.sample_rate / self.hop

        self.quantizer = None
        if cfg.quantizer:
            quantizer = load_quantizer(cfg.quantizer, cfg.quantizer_kind)
            if isinstance(quantizer, KMeansQuantizer) and quantizer.metadata.get("kind", "kmeans") != "kmeans":
                raise QuantizerError(
                    f"tokenizer.quantizer: {cfg.quantizer} holds {quantizer.metadata.get('kind')!r} centroids, "
                    f"not k-means centroids of model features (kind='kmeans')"
                )
            if quantizer.dim != self.hidden_size:
                raise QuantizerError(
                    f"tokenizer.quantizer: {cfg.quantizer} expects {quantizer.dim}-dim features but layer "
                    f"{cfg.layer} of {cfg.model_path} gives {self.hidden_size}"
                )
            self.quantizer = quantizer.to(self.device)
        self.num_units = self.quantizer.num_units if self.quantizer is not None else 0

    # ------------------------------------------------------------------ model
    def _forward(self, pieces: list[torch.Tensor]) -> list[torch.Tensor]:
        """Waveform pieces ``[S_i]`` -> layer features ``[T_i, H]`` (one padded forward)."""
        lengths = torch.tensor([p.numel() for p in pieces])
        frames = self.model._get_feat_extract_output_lengths(lengths).clamp_min(0)  # [b]
        if self.group_norm_frontend or len(pieces) == 1:
            conv = [self.model.feature_extractor(p[None].to(self.device, self.dtype))[0].T for p in pieces]  # [T_i, C]
        else:
            wav = torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True).to(self.device, self.dtype)  # [b, S]
            out = self.model.feature_extractor(wav).transpose(1, 2)  # [b, T, C]
            conv = [out[i, : int(n)] for i, n in enumerate(frames)]
        feats = torch.nn.utils.rnn.pad_sequence(conv, batch_first=True)  # [b, T, C]
        mask = None
        if int(frames.min()) != feats.shape[1]:
            mask = torch.arange(feats.shape[1])[None, :] < frames[:, None]  # [b, T] True on real frames
            mask = mask.to(self.device)
        hidden = self.model.feature_projection(feats)  # [b, T, H]
        hidden = self.model.encoder(hidden, attention_mask=mask).last_hidden_state  # [b, T, H]
        hidden = hidden.float()
        if self.pool_pairs:
            hidden = [self._pool_pairs(hidden[i, : int(n)]) for i, n in enumerate(frames)]
        else:
            hidden = [hidden[i, : int(n)] for i, n in enumerate(frames)]
        return hidden

    @staticmethod
    def _pool_pairs(x: torch.Tensor) -> torch.Tensor:
        """``[T, H]`` 50 Hz -> ``[ceil(T/2), H]`` 25 Hz: mean of frames (2i, 2i+1); an odd last frame stays."""
        t = x.shape[0]
        pairs = x[: t - t % 2].reshape(t // 2, 2, x.shape[1]).mean(1)  # [T//2, H]
        return torch.cat([pairs, x[t - 1 :]], 0) if t % 2 else pairs

    # ------------------------------------------------------------------ interface
    @torch.no_grad()
    def features(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        wav, lengths = self._checked(waveform, lengths)
        chunk = int(self.config.chunk_seconds * self.sample_rate) if self.config.chunk_seconds > 0 else 0
        min_len = self._min_samples()
        pieces: list[tuple[int, int, torch.Tensor]] = []  # (row, chunk index, samples)
        counts: list[int] = []  # chunks per row
        for row, n in enumerate(lengths.tolist()):
            row_wav = wav[row, :n]
            if self.normalize:
                row_wav = (row_wav - row_wav.mean()) / torch.sqrt(row_wav.var(unbiased=False) + 1e-7)
            spans = chunk_spans(n, chunk, self.hop) if chunk else [(0, n)]
            counts.append(len(spans))
            for j, (s, e) in enumerate(spans):
                piece = row_wav[s:e]
                if piece.numel() < min_len:  # shorter than one frame's receptive field: zero-pad to one frame
                    piece = torch.nn.functional.pad(piece, (0, min_len - piece.numel()))
                pieces.append((row, j, piece))
        # longest first so that each forward pads little
        order = sorted(range(len(pieces)), key=lambda i: -pieces[i][2].numel())
        outputs: dict[tuple[int, int], torch.Tensor] = {}
        step = self.config.max_batch_chunks
        for start in range(0, len(order), step):
            group = [pieces[i] for i in order[start : start + step]]
            for (row, j, _), out in zip(group, self._forward([g[2] for g in group])):
                outputs[(row, j)] = out
        rows = [torch.cat([outputs[(row, j)] for j in range(c)], 0) for row, c in enumerate(counts)]
        frame_lengths = torch.tensor([r.shape[0] for r in rows], dtype=torch.long)
        return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True), frame_lengths  # [B, T, H], [B]

    def _min_samples(self) -> int:
        """Fewest samples for which the conv front-end yields one frame (its receptive field)."""
        field_ = 1
        for k, s in reversed(list(zip(self.model.config.conv_kernel, self.model.config.conv_stride))):
            field_ = (field_ - 1) * s + k
        return field_

    def centroids_metadata(self) -> dict[str, str]:
        return {
            "tokenizer": "hubert",
            "model_path": str(self.config.model_path),
            "layer": str(self.config.layer),
            "pool_pairs": str(self.pool_pairs),
            "frame_rate": str(self.frame_rate),
        }

    def __repr__(self) -> str:
        return (
            f"HubertTokenizer(model_path={self.config.model_path!r}, layer={self.config.layer}, "
            f"frame_rate={self.frame_rate}, num_units={self.num_units})"
        )
