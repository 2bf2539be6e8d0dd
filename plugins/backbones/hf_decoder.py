"""The ``hf_decoder`` backbone: any transformers decoder LM (Qwen2, Llama, ...) under a custom mask.

The model runs with SDPA and an explicit 4-D boolean attention mask (the attention policy's),
which transformers passes through unchanged; so an autoregressive checkpoint can be run
bidirectionally (LLaDA-TTS-style conversion), block-causally, or hybrid (TtT). ``attention_mask
= None`` means full (bidirectional) attention, as for every backbone, not the model's causal default.

Weights are read only from safetensors (``use_safetensors=True``) and no remote code is run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from diffuspeech.backbone import INITS, Backbone, check_attention_mask, check_inputs_embeds, parse_dtype, resized_rows

# Shape of a fresh model when no path is given (~0.6 M parameters), overridable field by field.
TINY_DEFAULTS: dict[str, Any] = dict(
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=256,
    vocab_size=1024,
    max_position_embeddings=1024,
    rope_theta=10000.0,
)
_ARCH_FIELDS = tuple(TINY_DEFAULTS) + ("tie_word_embeddings",)


class HFDecoderBackbone(Backbone):
    """A transformers ``*ForCausalLM`` used as a (bidirectional/hybrid) backbone."""

    @dataclass
    class Config:
        path: Optional[str] = None  # local transformers folder (config.json + *.safetensors); None = fresh model
        model_type: str = "llama"  # fresh model family when path is None: "llama" | "qwen2" | any decoder model_type
        # Fresh-model shape (None = tiny default); with path they must match config.json.
        hidden_size: Optional[int] = None  # default 128
        num_hidden_layers: Optional[int] = None  # default 2
        num_attention_heads: Optional[int] = None  # default 4
        num_key_value_heads: Optional[int] = None  # default 2
        intermediate_size: Optional[int] = None  # default 256
        vocab_size: Optional[int] = None  # default 1024
        max_position_embeddings: Optional[int] = None  # default 1024
        rope_theta: Optional[float] = None  # default 10000
        tie_word_embeddings: Optional[bool] = None  # default: the model family's
        dtype: str = "float32"  # "float32" | "bfloat16"
        device: Optional[str] = None  # "cpu", "cuda", ...; None = cpu
        extend_vocab_to: Optional[int] = None  # grow embedding and head after loading
        new_row_init: str = "mean"  # "mean" of existing rows | "normal" (std initializer_range)
        gradient_checkpointing: bool = False
        seed: Optional[int] = None  # seed for a fresh model's random init

    @classmethod
    def check_config(cls, config: HFDecoderBackbone.Config, path: str) -> None:
        parse_dtype(config.dtype, path)

    def __init__(self, config: Optional[HFDecoderBackbone.Config] = None) -> None:
        super().__init__(config)
        from transformers import AutoConfig, AutoModelForCausalLM

        cfg = self.config
        where = "backbone"
        dtype = parse_dtype(cfg.dtype, where)
        device = torch.device(cfg.device) if cfg.device else torch.device("cpu")
        if cfg.new_row_init not in INITS:
            raise ValueError(f"{where}.new_row_init: unknown init {cfg.new_row_init!r}; valid: {', '.join(INITS)}")
        overrides = {k: getattr(cfg, k) for k in _ARCH_FIELDS if getattr(cfg, k) is not None}

        if cfg.path:
            folder = Path(cfg.path).expanduser()
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(f"{where}.path: {folder / 'config.json'} not found (expected a transformers model folder)")
            hf_config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
            clashes = [
                f"{where}.{k}={v!r} but config.json says {_config_value(hf_config, k)!r}"
                for k, v in overrides.items()
                if _config_value(hf_config, k) != v
            ]
            if clashes:
                raise ValueError("settings disagree with the checkpoint: " + "; ".join(clashes) + ". Remove them from the config.")
            self.lm, info = AutoModelForCausalLM.from_pretrained(
                folder,
                dtype=dtype,
                attn_implementation="sdpa",
                local_files_only=True,
                trust_remote_code=False,
                use_safetensors=True,
                output_loading_info=True,
            )
            problems = {k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
            problems = {k: v for k, v in problems.items() if v}
            if problems:
                detail = "; ".join(f"{k.replace('_', ' ')}: {', '.join(map(str, v[:12]))}" for k, v in problems.items())
                raise ValueError(f"{folder}: the weights do not match config.json ({detail})")
            self.lm.to(device)
        else:
            kwargs = dict(TINY_DEFAULTS)
            kwargs.update(overrides)
            hf_config = AutoConfig.for_model(cfg.model_type, **kwargs)
            hf_config._attn_implementation = "sdpa"
            if cfg.seed is not None:
                torch.manual_seed(cfg.seed)
            with torch.device(device):
                self.lm = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation="sdpa")
        self.lm.config.use_cache = False
        if cfg.gradient_checkpointing:
            self.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.extend_vocab_to is not None:
            if cfg.extend_vocab_to < self.vocab_size:
                raise ValueError(f"{where}.extend_vocab_to={cfg.extend_vocab_to} is smaller than the vocabulary ({self.vocab_size})")
            self.resize_vocab(cfg.extend_vocab_to, cfg.new_row_init)
        # Tied head and embedding are one tensor: keep only the embedding in state_dict
        # (safetensors refuses shared tensors) and restore the alias on load.
        self._register_state_dict_hook(_drop_tied_head)
        self.register_load_state_dict_pre_hook(_restore_tied_head)

    # ----------------------------------------------------------------- Backbone API
    @property
    def tied(self) -> bool:
        return self.lm.get_output_embeddings().weight is self.lm.get_input_embeddings().weight

    @property
    def vocab_size(self) -> int:
        return self.lm.get_input_embeddings().weight.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.lm.get_input_embeddings().weight.shape[1]

    @property
    def max_seq_len(self) -> int:
        return int(getattr(self.lm.config, "max_position_embeddings", 0) or 0) or 2**31 - 1

    def output_head(self) -> nn.Module:
        return self.lm.get_output_embeddings()

    supports_inputs_embeds = True  # embed_tokens + inputs_embeds (see diffuspeech.backbone)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` ids -> ``[B, L, D]`` input embeddings."""
        return self.lm.get_input_embeddings()(input_ids)

    def hidden_states(
        self,
        input_ids: torch.Tensor,  # [B, L] long
        attention_mask: torch.Tensor | None = None,  # [B, 1, L, L] bool, True = attend; None = full
        inputs_embeds: torch.Tensor | None = None,  # [B, L, D]: used instead of looking input_ids up
    ) -> torch.Tensor:
        batch, length = input_ids.shape
        check_attention_mask(attention_mask, batch, length)
        if attention_mask is None:
            attention_mask = torch.ones(batch, 1, length, length, dtype=torch.bool, device=input_ids.device)
        elif attention_mask.shape[0] != batch:
            attention_mask = attention_mask.expand(batch, 1, length, length)
        if inputs_embeds is not None:
            check_inputs_embeds(inputs_embeds, input_ids, self.hidden_size)
            weight = self.lm.get_input_embeddings().weight
            out = self.lm.base_model(inputs_embeds=inputs_embeds.to(weight.dtype), attention_mask=attention_mask, use_cache=False)
            return out.last_hidden_state  # [B, L, D]
        out = self.lm.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state  # [B, L, D]

    @torch.no_grad()
    def resize_vocab(self, new_size: int, init: str = "mean") -> None:
        """Grow/shrink embedding and head to ``new_size`` rows; kept rows stay bit-identical."""
        std = float(getattr(self.lm.config, "initializer_range", 0.02))
        emb, head = self.lm.get_input_embeddings(), self.lm.get_output_embeddings()
        tied = head.weight is emb.weight
        emb.weight = nn.Parameter(resized_rows(emb.weight, new_size, init, std), requires_grad=emb.weight.requires_grad)
        emb.num_embeddings = new_size
        if tied:
            head.weight = emb.weight
        else:
            head.weight = nn.Parameter(resized_rows(head.weight, new_size, init, std), requires_grad=head.weight.requires_grad)
        if getattr(head, "bias", None) is not None:
            bias = resized_rows(head.bias[:, None], new_size, init, std)[:, 0]
            head.bias = nn.Parameter(bias, requires_grad=head.bias.requires_grad)
        head.out_features = new_size
        self.lm.config.vocab_size = new_size

    def save_pretrained(self, out_dir: str | Path) -> Path:
        """Write a transformers folder (config.json + safetensors) loadable as ``path``."""
        self.lm.save_pretrained(out_dir)
        return Path(out_dir)


def _config_value(hf_config: Any, key: str) -> Any:
    value = getattr(hf_config, key, None)
    if value is None and key == "rope_theta":  # transformers >= 5 keeps it in rope_parameters
        value = (getattr(hf_config, "rope_parameters", None) or {}).get("rope_theta")
    return value


def _drop_tied_head(module: HFDecoderBackbone, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    if module.tied:
        emb_key, head_key = _tied_keys(module, prefix)
        state_dict.pop(head_key, None)


def _restore_tied_head(module: HFDecoderBackbone, state_dict: dict, prefix: str, *args: Any) -> None:
    if module.tied:
        emb_key, head_key = _tied_keys(module, prefix)
        if head_key not in state_dict and emb_key in state_dict:
            state_dict[head_key] = state_dict[emb_key]


def _tied_keys(module: HFDecoderBackbone, prefix: str) -> tuple[str, str]:
    """State-dict keys of the input embedding and of the (tied) output head weight."""
    emb_mod, head_mod = module.lm.get_input_embeddings(), module.lm.get_output_embeddings()
    mods = {id(m): n for n, m in module.named_modules(remove_duplicate=False)}
    return prefix + mods[id(emb_mod)] + ".weight", prefix + mods[id(head_mod)] + ".weight"
