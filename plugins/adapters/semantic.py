"""``semantic`` adapter (DIFFA's): one encoder layer, 4x down-sampled, projected to the backbone width.

    [B, T, D_in] -> Conv1d(k3) -> GELU -> Conv1d(k3, stride 4, out 4 x width) -> Linear(4 x width -> width)
                 -> ReLU -> Linear(width -> D_model) -> ReLU -> LayerNorm   -> [B, ceil(T / 4), D_model]

``prompt_tokens`` trainable embeddings are prepended (DIFFA's stage 1 uses 20).
``context_layers`` > 0 adds that many trainable Transformer encoder layers after the first
Linear (not in DIFFA; gives a small toy adapter a view wider than the convolutions' 100 ms)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from diffuspeech.adapter import Adapter
from diffuspeech.encoder import EncoderOutput


class SemanticAdapter(Adapter):
    @dataclass
    class Config:
        input_size: Optional[int] = None  # encoder feature width (None: the encoder's, filled when composed)
        output_size: Optional[int] = None  # backbone hidden size (None: the backbone's, filled when composed)
        layers: list[int] = field(default_factory=lambda: [-1])  # the encoder layer it reads (one; -1 = last)
        width: Optional[int] = None  # inner width d (None: input_size); the strided conv outputs 4 x width
        stride: int = 4  # down-sampling of the second convolution (Whisper's 50 Hz -> 12.5 Hz)
        prompt_tokens: int = 0  # trainable embeddings prepended to the output (DIFFA stage 1: 20)
        context_layers: int = 0  # trainable Transformer encoder layers over the down-sampled frames (0 = DIFFA's)
        context_heads: int = 4  # their attention heads
        output_gain: float = 1.0  # initial gain of the output LayerNorm: match it to the backbone's token-embedding scale (per element)
        seed: int = 0  # initialisation

    @classmethod
    def check_config(cls, config: SemanticAdapter.Config, path: str) -> None:
        if len(config.layers) != 1:
            raise ValueError(f"{path}.layers: the semantic adapter reads one encoder layer, got {list(config.layers)}")
        for key in ("input_size", "output_size", "width"):
            v = getattr(config, key)
            if v is not None and v <= 0:
                raise ValueError(f"{path}.{key}: expected a positive width (or null), got {v}")
        if config.stride < 1 or config.prompt_tokens < 0 or config.context_layers < 0:
            raise ValueError(f"{path}: stride must be >= 1, prompt_tokens and context_layers >= 0")
        width = config.width or config.input_size
        if config.context_layers and width and width % config.context_heads:
            raise ValueError(f"{path}.context_heads: {config.context_heads} does not divide the width {width}")

    def __init__(self, config: Optional[SemanticAdapter.Config] = None) -> None:
        super().__init__(config)
        c = self.config
        self.check_config(c, "adapters.semantic")
        if c.input_size is None or c.output_size is None:
            raise ValueError("adapters.semantic: input_size and output_size must be set (the model fills them from the encoder and backbone)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            self._build(c)

    def _build(self, c: SemanticAdapter.Config) -> None:
        d_in, width = c.input_size, c.width or c.input_size
        self.conv1 = nn.Conv1d(d_in, d_in, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d_in, 4 * width, kernel_size=3, stride=c.stride, padding=1)
        self.proj1 = nn.Linear(4 * width, width)
        self.context = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(width, c.context_heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True),
            num_layers=c.context_layers, enable_nested_tensor=False,
        ) if c.context_layers else None
        self.proj2 = nn.Linear(width, c.output_size)
        self.norm = nn.LayerNorm(c.output_size)
        nn.init.constant_(self.norm.weight, c.output_gain)
        self.prompt = nn.Parameter(torch.randn(c.prompt_tokens, c.output_size) * 0.02) if c.prompt_tokens else None

    def output_lengths(self, frames: torch.Tensor) -> torch.Tensor:
        frames = torch.as_tensor(frames, dtype=torch.long)
        return (frames - 1) // self.config.stride + 1 + self.config.prompt_tokens  # conv2: k3, pad 1

    def forward(self, features: EncoderOutput) -> tuple[torch.Tensor, torch.Tensor]:
        x = features.layer(self.layers[0], "adapters.semantic.layers")  # [B, T, D_in]
        frames = features.lengths  # [B]
        x = nn.functional.gelu(self.conv1(x.transpose(1, 2)))  # [B, D_in, T]
        x = self.conv2(x).transpose(1, 2)  # [B, T', 4w]
        x = torch.relu(self.proj1(x))  # [B, T', w]
        n = (frames - 1) // self.config.stride + 1  # [B] valid down-sampled frames
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < n[:, None]  # [B, T']
        if self.context is not None:
            x = self.context(x, src_key_padding_mask=~valid)
        x = self.norm(torch.relu(self.proj2(x)))  # [B, T', D_model]
        x = x * valid[..., None]
        if self.prompt is not None:
            x = torch.cat([self.prompt[None].expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)  # [B, P + T', D_model]
        return x, n + self.config.prompt_tokens
