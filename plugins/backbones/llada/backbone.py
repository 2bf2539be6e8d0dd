"""The ``llada`` backbone: the LLaDA transformer (bidirectional by default).

RMSNorm, SwiGLU, RoPE, untied output head, grouped-query attention when n_kv_heads < n_heads.
Either loads an official LLaDA folder (``path``) or builds a randomly initialised network from
a preset and/or explicit architecture fields. Attention goes through SDPA with the boolean mask
the caller passes (an attention policy's mask), so the same network runs bidirectional,
block-causal or hybrid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from diffuspeech.backbone import INITS, Backbone, KVCache, check_attention_mask, check_inputs_embeds, parse_dtype, resized_rows

from .arch import ARCH_FIELDS, LLaDAArch, check_overrides_match, resolve_arch
from .layers import LLaDABlock, RMSNorm, TiedHead, rope_tables


class LLaDABackbone(Backbone):
    """LLaDA transformer. State-dict keys are the official ones without the leading ``model.``."""

    supports_kv_cache = True  # hidden_states_and_cache / hidden_states_cached (see diffuspeech.sampling.kv_cache)

    @dataclass
    class Config:
        path: Optional[str] = None  # local official LLaDA folder (config.json + *.safetensors [+ index]); None = random init
        preset: Optional[str] = None  # "tiny" (~4.5M) | "small" (~29M) | "8b" (LLaDA-8B shape); None = "tiny". Ignored with path
        # Architecture. None = from path's config.json, else from the preset. With path, a value
        # given here must match config.json (it is checked, never silently ignored).
        d_model: Optional[int] = None  # hidden size
        n_layers: Optional[int] = None
        n_heads: Optional[int] = None  # query heads
        n_kv_heads: Optional[int] = None  # key/value heads (GQA when < n_heads)
        mlp_hidden_size: Optional[int] = None  # SwiGLU inner size
        vocab_size: Optional[int] = None  # embedding/head rows before extend_vocab_to
        max_sequence_length: Optional[int] = None  # longest canvas
        rope_theta: Optional[float] = None  # RoPE base (LLaDA-8B: 500000)
        rms_norm_eps: Optional[float] = None  # default 1e-5
        init_std: Optional[float] = None  # std of the normal init of a fresh model (default 0.02)
        weight_tying: Optional[bool] = None  # output head shares the embedding (default False)
        dtype: str = "float32"  # parameter dtype: "float32" | "bfloat16"
        device: Optional[str] = None  # where to build/load ("cpu", "cuda", "cuda:1"); None = cpu
        extend_vocab_to: Optional[int] = None  # grow embedding and head after loading (126464 -> 126973 for DiffuSpeech)
        new_row_init: str = "mean"  # init of added rows: "mean" of existing rows | "normal" (std init_std)
        gradient_checkpointing: bool = False  # recompute each block in backward (saves activation memory)
        seed: Optional[int] = None  # seed for the random init of a fresh model (None = torch's global RNG)

    @classmethod
    def check_config(cls, config: LLaDABackbone.Config, path: str) -> None:
        """dtype, init and device choices, and (without a path) the architecture's shape rules."""
        parse_dtype(config.dtype, path)
        if config.new_row_init not in INITS:
            raise ValueError(f"{path}.new_row_init: unknown init {config.new_row_init!r}; valid: {', '.join(INITS)}")
        if config.device and str(config.device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"{path}.device: {config.device!r} but no CUDA GPU is available; use {path}.device=cpu (or leave it unset)")
        if not config.path:
            resolve_arch(config.preset, {k: getattr(config, k) for k in ARCH_FIELDS}, path)

    def __init__(self, config: Optional[LLaDABackbone.Config] = None) -> None:
        super().__init__(config)
        cfg = self.config
        where = "backbone"
        self._param_dtype = parse_dtype(cfg.dtype, where)
        device = torch.device(cfg.device) if cfg.device else torch.device("cpu")
        if cfg.new_row_init not in INITS:
            raise ValueError(f"{where}.new_row_init: unknown init {cfg.new_row_init!r}; valid: {', '.join(INITS)}")
        overrides = {k: getattr(cfg, k) for k in ARCH_FIELDS}

        if cfg.path:
            from .checkpoint import read_arch

            arch = read_arch(cfg.path)
            check_overrides_match(arch, overrides, where, str(Path(cfg.path) / "config.json"))
        else:
            arch = resolve_arch(cfg.preset, overrides, where)
        self.arch: LLaDAArch = arch
        self._rope_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # device -> (cos, sin)

        if cfg.path:
            from .checkpoint import load_llada_weights

            with torch.device("meta"):  # no memory until each tensor is read from the checkpoint
                self._build(arch)
            load_llada_weights(self, cfg.path, dtype=self._param_dtype, device=device)
        else:
            with torch.device(device):  # built where it runs: an 8B model never visits the host
                self._build(arch)
            self.reset_parameters(seed=cfg.seed)
        if cfg.extend_vocab_to is not None:
            if cfg.extend_vocab_to < self.vocab_size:
                raise ValueError(
                    f"{where}.extend_vocab_to={cfg.extend_vocab_to} is smaller than the vocabulary "
                    f"({self.vocab_size}); it only grows. Use resize_vocab() to shrink on purpose."
                )
            self.resize_vocab(cfg.extend_vocab_to, cfg.new_row_init)

    # ----------------------------------------------------------------- construction
    def _build(self, arch: LLaDAArch) -> None:
        modules: dict[str, nn.Module] = dict(
            # an explicit weight skips nn.Embedding's own init (overwritten by loading or reset_parameters)
            wte=nn.Embedding(
                arch.vocab_size, arch.d_model, _weight=torch.empty(arch.vocab_size, arch.d_model, dtype=self._param_dtype)
            ),
            blocks=nn.ModuleList(LLaDABlock(arch, dtype=self._param_dtype) for _ in range(arch.n_layers)),
            ln_f=RMSNorm(arch.d_model, arch.rms_norm_eps, dtype=self._param_dtype),
        )
        if not arch.weight_tying:
            modules["ff_out"] = nn.Linear(arch.d_model, arch.vocab_size, bias=False, dtype=self._param_dtype)
        self.transformer = nn.ModuleDict(modules)

    @torch.no_grad()
    def reset_parameters(self, seed: Optional[int] = None) -> None:
        """Random init: normal(0, init_std) weights, unit norms."""
        generator_state = torch.random.get_rng_state() if seed is not None else None
        if seed is not None:
            torch.manual_seed(seed)
            if torch.cuda.is_available():
                torch.cuda.manual_seed_all(seed)
        std = self.arch.init_std
        nn.init.normal_(self.transformer["wte"].weight, mean=0.0, std=std)
        for block in self.transformer["blocks"]:
            block.reset_parameters(std)
        nn.init.ones_(self.transformer["ln_f"].weight)
        if "ff_out" in self.transformer:
            nn.init.normal_(self.transformer["ff_out"].weight, mean=0.0, std=std)
        if generator_state is not None:
            torch.random.set_rng_state(generator_state)

    # ----------------------------------------------------------------- Backbone API
    @property
    def vocab_size(self) -> int:
        return self.transformer["wte"].weight.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.arch.d_model

    @property
    def max_seq_len(self) -> int:
        return self.arch.max_sequence_length

    def output_head(self) -> nn.Module:
        if "ff_out" in self.transformer:
            return self.transformer["ff_out"]
        return TiedHead(self.transformer["wte"])

    def _rope(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 cos/sin ``[length, head_dim]``. Tables cover max_sequence_length and are
        rebuilt longer on demand (like the official model, longer canvases are not refused)."""
        key = str(device)
        cached = self._rope_cache.get(key)
        if cached is None or cached[0].shape[0] < length:
            size = max(length, self.arch.max_sequence_length)
            # plain tensors even when first called under inference_mode, so training can reuse them
            with torch.inference_mode(False), torch.no_grad():
                cached = rope_tables(size, self.arch.head_dim, self.arch.rope_theta, device)
            self._rope_cache[key] = cached
        cos, sin = cached
        return cos[:length], sin[:length]

    supports_inputs_embeds = True  # embed_tokens + inputs_embeds (see diffuspeech.backbone)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` ids -> ``[B, L, D]`` input embeddings."""
        return self.transformer["wte"](input_ids)

    def _inputs(self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor | None) -> torch.Tensor:
        if inputs_embeds is None:
            return self.transformer["wte"](input_ids)  # [B, L, D]
        check_inputs_embeds(inputs_embeds, input_ids, self.hidden_size)
        return inputs_embeds.to(self.transformer["wte"].weight.dtype)

    def hidden_states(
        self,
        input_ids: torch.Tensor,  # [B, L] long
        attention_mask: torch.Tensor | None = None,  # [B, 1, L, L] bool, True = attend; None = full
        inputs_embeds: torch.Tensor | None = None,  # [B, L, D]: used instead of looking input_ids up
    ) -> torch.Tensor:
        batch, length = input_ids.shape
        check_attention_mask(attention_mask, batch, length)
        x = self._inputs(input_ids, inputs_embeds)  # [B, L, D]
        cos, sin = self._rope(length, x.device)  # [L, Dh] each
        use_ckpt = self.config.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.transformer["blocks"]:
            if use_ckpt:
                x = checkpoint(block, x, cos, sin, attention_mask, use_reentrant=False)
            else:
                x = block(x, cos, sin, attention_mask)
        return self.transformer["ln_f"](x)  # [B, L, D]

    # ----------------------------------------------------------------- KV cache (block decoding)
    @torch.no_grad()
    def hidden_states_and_cache(
        self,
        input_ids: torch.Tensor,  # [B, L] long
        attention_mask: torch.Tensor | None = None,  # [B, 1, L, L] bool, True = attend; None = full
        inputs_embeds: torch.Tensor | None = None,  # [B, L, D]: used instead of looking input_ids up
    ) -> tuple[torch.Tensor, KVCache]:
        """:meth:`hidden_states` plus every layer's rotated keys and values, for cached block steps."""
        batch, length = input_ids.shape
        check_attention_mask(attention_mask, batch, length)
        x = self._inputs(input_ids, inputs_embeds)  # [B, L, D]
        cos, sin = self._rope(length, x.device)  # [L, Dh] each
        keys, values = [], []
        for block in self.transformer["blocks"]:
            x, k, v = block.forward_with_kv(x, cos, sin, attention_mask)  # [B, L, D], [B, Hkv, L, Dh] x2
            keys.append(k)
            values.append(v)
        return self.transformer["ln_f"](x), KVCache(keys, values)  # [B, L, D]

    @torch.no_grad()
    def hidden_states_cached(
        self,
        input_ids: torch.Tensor,  # [B, W] long, the tokens at the window positions
        positions: torch.Tensor,  # [B, W] long canvas positions of the window (distinct per row)
        cache: KVCache,  # from hidden_states_and_cache on a [B, L] canvas; window entries overwritten in place
        attention_mask: torch.Tensor | None = None,  # [B, 1, L, L] canvas mask; None = full
        inputs_embeds: torch.Tensor | None = None,  # [B, W, D]: the window's embeddings instead of looking input_ids up
    ) -> torch.Tensor:
        """Final hidden states ``[B, W, D]`` of the window: its queries attend over all L keys,
        recomputed at the window and taken from ``cache`` elsewhere (Fast-dLLM)."""
        batch, width = input_ids.shape
        if positions.shape != input_ids.shape:
            raise ValueError(f"positions {tuple(positions.shape)} must match input_ids {tuple(input_ids.shape)}")
        if len(cache.keys) != len(self.transformer["blocks"]) or cache.batch != batch:
            raise ValueError(
                f"KV cache of {len(cache.keys)} layers x batch {cache.batch} does not fit this call "
                f"({len(self.transformer['blocks'])} layers, batch {batch}): build it with hidden_states_and_cache "
                "on the same canvas"
            )
        length = cache.length
        if bool(((positions < 0) | (positions >= length)).any()):
            raise ValueError(f"window positions must lie in [0, {length}) (the cached canvas length)")
        check_attention_mask(attention_mask, batch, length)
        x = self._inputs(input_ids, inputs_embeds)  # [B, W, D]
        cos, sin = self._rope(length, x.device)  # [L, Dh]
        cos, sin = cos[positions][:, None], sin[positions][:, None]  # [B, 1, W, Dh] each
        rows = None
        if attention_mask is not None:
            full = attention_mask.expand(batch, 1, length, length)
            rows = full.gather(2, positions[:, None, :, None].expand(batch, 1, width, length))  # [B, 1, W, L]
        kv_heads, head_dim = self.arch.n_kv_heads, self.arch.head_dim
        index = positions[:, None, :, None].expand(batch, kv_heads, width, head_dim)  # [B, Hkv, W, Dh]
        for block, k_cache, v_cache in zip(self.transformer["blocks"], cache.keys, cache.values):
            x = block.forward_window(x, cos, sin, rows, index, k_cache, v_cache)  # [B, W, D]
        return self.transformer["ln_f"](x)  # [B, W, D]

    @torch.no_grad()
    def resize_vocab(self, new_size: int, init: str = "mean") -> None:
        """Grow/shrink embedding and head to ``new_size`` rows; kept rows stay bit-identical."""
        wte = self.transformer["wte"]
        grad = wte.weight.requires_grad
        wte.weight = nn.Parameter(resized_rows(wte.weight, new_size, init, self.arch.init_std), requires_grad=grad)
        wte.num_embeddings = new_size
        if "ff_out" in self.transformer:
            head = self.transformer["ff_out"]
            grad = head.weight.requires_grad
            head.weight = nn.Parameter(resized_rows(head.weight, new_size, init, self.arch.init_std), requires_grad=grad)
            head.out_features = new_size
        self.arch = dataclasses.replace(self.arch, vocab_size=new_size)

    # ----------------------------------------------------------------- export
    def save_pretrained(
        self,
        out_dir: str | Path,
        max_shard_bytes: int = 5 * 1024**3,
        dtype: Optional[str] = None,
        copy_files_from: Optional[str | Path] = None,
    ) -> Path:
        """Write an official-format LLaDA folder (config.json, safetensors shards, index).

        ``dtype`` ("float32" | "bfloat16") defaults to the parameters' dtype. ``copy_files_from``
        (default: the folder this model was loaded from) supplies tokenizer and code files.
        """
        from .checkpoint import save_llada_folder

        source = copy_files_from if copy_files_from is not None else self.config.path
        return save_llada_folder(self, out_dir, max_shard_bytes=max_shard_bytes, dtype=dtype, copy_files_from=source)

    @classmethod
    def from_pretrained(cls, path: str | Path, **settings: Any) -> LLaDABackbone:
        """Load an official LLaDA folder: ``LLaDABackbone.from_pretrained(dir, dtype="bfloat16")``."""
        return cls(cls.Config(path=str(path), **settings))
