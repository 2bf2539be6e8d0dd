"""Layers of the LLaDA transformer: RMSNorm, rotary embedding, the Llama-style block.

Sub-module names follow the official checkpoint (``attn_norm``, ``q_proj``, ``k_proj``,
``v_proj``, ``attn_out``, ``ff_norm``, ``ff_proj`` (SwiGLU gate), ``up_proj``, ``ff_out``) so
that official tensors map onto parameters by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .arch import LLaDAArch


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32, cast back, then scaled by a weight."""

    def __init__(self, dim: int, eps: float, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., D] -> [..., D]
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_tables(length: int, head_dim: int, theta: float, device: torch.device | str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables ``[length, head_dim]`` (float32) for the half-split RoPE layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))  # [Dh/2]
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)  # [L, Dh/2]
    angles = torch.cat((angles, angles), dim=-1)  # [L, Dh]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, full_precision: bool = True) -> torch.Tensor:
    """Rotate ``x`` ``[B, H, L, Dh]`` by position; cos/sin ``[L, Dh]``. Halves (not pairs) are rotated."""
    xr = x.float() if full_precision else x
    cos, sin = cos.to(xr.dtype), sin.to(xr.dtype)
    first, second = xr.chunk(2, dim=-1)  # [B, H, L, Dh/2] each
    rotated = torch.cat((-second, first), dim=-1)  # [B, H, L, Dh]
    return (xr * cos + rotated * sin).to(x.dtype)


class LLaDABlock(nn.Module):
    """Pre-norm block: ``x + Attn(RMSNorm(x))``, then ``x + SwiGLU(RMSNorm(x))``."""

    def __init__(self, arch: LLaDAArch, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        d, kv = arch.d_model, arch.n_kv_heads * arch.head_dim
        lin = dict(bias=False, device=device, dtype=dtype)
        self.n_heads, self.n_kv_heads, self.head_dim = arch.n_heads, arch.n_kv_heads, arch.head_dim
        self.rope_full_precision = arch.rope_full_precision
        self.attn_norm = RMSNorm(d, arch.rms_norm_eps, device, dtype)
        self.q_proj = nn.Linear(d, d, **lin)
        self.k_proj = nn.Linear(d, kv, **lin)
        self.v_proj = nn.Linear(d, kv, **lin)
        self.attn_out = nn.Linear(d, d, **lin)
        self.ff_norm = RMSNorm(d, arch.rms_norm_eps, device, dtype)
        self.ff_proj = nn.Linear(d, arch.mlp_hidden_size, **lin)  # SwiGLU gate
        self.up_proj = nn.Linear(d, arch.mlp_hidden_size, **lin)
        self.ff_out = nn.Linear(arch.mlp_hidden_size, d, **lin)

    def _qkv(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rotated queries ``[B, H, L, Dh]``, rotated keys and values ``[B, Hkv, L, Dh]``.

        cos/sin are ``[L, Dh]`` (positions 0..L-1) or ``[B, 1, L, Dh]`` (any positions per row)."""
        b, length, _ = x.shape
        h = self.attn_norm(x)  # [B, L, D]
        q = self.q_proj(h).view(b, length, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, L, Dh]
        k = self.k_proj(h).view(b, length, self.n_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, L, Dh]
        v = self.v_proj(h).view(b, length, self.n_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, L, Dh]
        q = apply_rope(q, cos, sin, self.rope_full_precision)
        k = apply_rope(k, cos, sin, self.rope_full_precision)
        return q, k, v

    def _attend_and_mlp(
        self,
        x: torch.Tensor,  # [B, Lq, D] residual stream of the queries
        q: torch.Tensor,  # [B, H, Lq, Dh]
        k: torch.Tensor,  # [B, Hkv, Lk, Dh]
        v: torch.Tensor,  # [B, Hkv, Lk, Dh]
        mask: torch.Tensor | None,  # [B, 1, Lq, Lk] bool or None (full attention)
    ) -> torch.Tensor:
        b, length, d = x.shape
        gqa = self.n_kv_heads != self.n_heads
        if gqa and mask is not None:
            # SDPA's fused kernels that take a mask do not take enable_gqa: share kv heads explicitly
            group = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # [B, H, Lk, Dh]
            gqa = False
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)  # [B, H, Lq, Dh]
        x = x + self.attn_out(att.transpose(1, 2).reshape(b, length, d))  # [B, Lq, D]
        h = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))  # [B, Lq, D]

    def forward(
        self,
        x: torch.Tensor,  # [B, L, D]
        cos: torch.Tensor,  # [L, Dh]
        sin: torch.Tensor,  # [L, Dh]
        mask: torch.Tensor | None,  # [B, 1, L, L] bool or None (full attention)
    ) -> torch.Tensor:
        q, k, v = self._qkv(x, cos, sin)
        return self._attend_and_mlp(x, q, k, v, mask)  # [B, L, D]

    def forward_with_kv(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward` that also returns this layer's rotated keys and values ``[B, Hkv, L, Dh]``."""
        q, k, v = self._qkv(x, cos, sin)
        return self._attend_and_mlp(x, q, k, v, mask), k, v

    def forward_window(
        self,
        x: torch.Tensor,  # [B, W, D] residual stream at the window positions
        cos: torch.Tensor,  # [B, 1, W, Dh] RoPE of the window positions
        sin: torch.Tensor,  # [B, 1, W, Dh]
        mask: torch.Tensor | None,  # [B, 1, W, L] bool rows of the window queries, or None (full attention)
        index: torch.Tensor,  # [B, Hkv, W, Dh] long: the window positions, expanded for scatter
        k_cache: torch.Tensor,  # [B, Hkv, L, Dh] keys of every position; the window's are overwritten in place
        v_cache: torch.Tensor,  # [B, Hkv, L, Dh] values, likewise
    ) -> torch.Tensor:
        """The window's queries attend over all L keys: fresh at the window, cached elsewhere."""
        q, k, v = self._qkv(x, cos, sin)  # [B, H, W, Dh], [B, Hkv, W, Dh] x2
        k_cache.scatter_(2, index, k)
        v_cache.scatter_(2, index, v)
        return self._attend_and_mlp(x, q, k_cache, v_cache, mask)  # [B, W, D]

    def reset_parameters(self, std: float) -> None:
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.attn_out, self.ff_proj, self.up_proj, self.ff_out):
            nn.init.normal_(lin.weight, mean=0.0, std=std)
        nn.init.ones_(self.attn_norm.weight)
        nn.init.ones_(self.ff_norm.weight)


class TiedHead(nn.Module):
    """Output head that reuses the embedding matrix (``weight_tying: true``)."""

    def __init__(self, embedding: nn.Embedding):
        super().__init__()
        self._embedding = [embedding]  # a list keeps it out of this module's state dict

    @property
    def weight(self) -> torch.Tensor:
        return self._embedding[0].weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [..., D] -> [..., V]
        return F.linear(hidden, self.weight)
