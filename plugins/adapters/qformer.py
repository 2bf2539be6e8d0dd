"""``qformer`` acoustic adapter (DIFFA's): learnable queries read several encoder layers.

    per tapped layer l:  queries_l [Q, w] -> Transformer decoder (self-attention over the queries,
                         cross-attention to Linear(features_l) [B, T, w]) -> [B, Q, w]
    mix:                 sum_l softmax(layer_weights)_l * out_l        -> [B, Q, w]
    out:                 LayerNorm -> Linear(w -> D_model)              -> [B, Q, D_model]

The decoder (BERT-sized in DIFFA: 2 layers, width 768, 12 heads) is shared by the layers; each
layer has its own queries (64 in DIFFA, Whisper-small layers 2, 5, 8, 11). The output has
``num_queries`` embeddings whatever the clip's length."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from diffuspeech.adapter import Adapter
from diffuspeech.encoder import EncoderOutput


class QFormerAdapter(Adapter):
    @dataclass
    class Config:
        input_size: Optional[int] = None  # encoder feature width (None: the encoder's, filled when composed)
        output_size: Optional[int] = None  # backbone hidden size (None: the backbone's, filled when composed)
        layers: list[int] = field(default_factory=lambda: [-1])  # encoder layers it taps (DIFFA, Whisper-small: [2, 5, 8, 11])
        num_queries: int = 64  # learnable queries per tapped layer = embeddings out
        width: int = 768  # Q-Former width
        heads: int = 12  # attention heads
        num_layers: int = 2  # decoder layers (self-attention + cross-attention + MLP)
        output_gain: float = 1.0  # initial gain of the output LayerNorm: match it to the backbone's token-embedding scale (per element)
        seed: int = 0  # initialisation

    @classmethod
    def check_config(cls, config: QFormerAdapter.Config, path: str) -> None:
        if not config.layers:
            raise ValueError(f"{path}.layers: tap at least one encoder layer")
        for key in ("num_queries", "width", "heads", "num_layers"):
            if int(getattr(config, key)) <= 0:
                raise ValueError(f"{path}.{key}: expected a positive integer, got {getattr(config, key)}")
        if config.width % config.heads:
            raise ValueError(f"{path}.heads: {config.heads} does not divide width {config.width}")
        for key in ("input_size", "output_size"):
            v = getattr(config, key)
            if v is not None and v <= 0:
                raise ValueError(f"{path}.{key}: expected a positive width (or null), got {v}")

    def __init__(self, config: Optional[QFormerAdapter.Config] = None) -> None:
        super().__init__(config)
        c = self.config
        self.check_config(c, "adapters.qformer")
        if c.input_size is None or c.output_size is None:
            raise ValueError("adapters.qformer: input_size and output_size must be set (the model fills them from the encoder and backbone)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            self.in_proj = nn.Linear(c.input_size, c.width)
            self.queries = nn.Parameter(torch.randn(len(c.layers), c.num_queries, c.width) * 0.02)  # [N_layers, Q, w]
            self.decoder = nn.TransformerDecoder(
                nn.TransformerDecoderLayer(c.width, c.heads, 4 * c.width, dropout=0.0, batch_first=True, activation="gelu"),
                num_layers=c.num_layers,
            )
            self.layer_weights = nn.Parameter(torch.zeros(len(c.layers)))  # softmax-mixed
            self.norm = nn.LayerNorm(c.width)
            nn.init.constant_(self.norm.weight, c.output_gain)
            self.out_proj = nn.Linear(c.width, c.output_size)

    def output_lengths(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.full_like(torch.as_tensor(frames, dtype=torch.long), self.config.num_queries)

    def forward(self, features: EncoderOutput) -> tuple[torch.Tensor, torch.Tensor]:
        frames = features.lengths  # [B]
        weights = torch.softmax(self.layer_weights, dim=0)  # [N_layers]
        mixed = None
        for i, layer in enumerate(self.layers):
            memory = self.in_proj(features.layer(layer, "adapters.qformer.layers"))  # [B, T, w]
            pad = torch.arange(memory.shape[1], device=memory.device)[None, :] >= frames[:, None]  # [B, T] True = padding
            queries = self.queries[i][None].expand(memory.shape[0], -1, -1)  # [B, Q, w]
            out = self.decoder(queries, memory, memory_key_padding_mask=pad) * weights[i]  # [B, Q, w]
            mixed = out if mixed is None else mixed + out
        x = self.out_proj(self.norm(mixed))  # [B, Q, D_model]
        return x, self.output_lengths(frames).to(x.device)
