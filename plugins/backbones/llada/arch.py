"""LLaDA architecture description: presets, and conversion from/to an official ``config.json``.

The official LLaDA ``config.json`` (``model_type: llada``, ``block_type: llama``) carries
OLMo-style fields. We support the variant every released LLaDA checkpoint uses: RMSNorm with
a weight and no bias, SwiGLU (``activation_type: silu`` with ``ff_proj`` as gate and ``up_proj``),
RoPE, no biases, no QK-norm, optional weight tying. Any other value is refused with the field
named, so a checkpoint is never loaded into the wrong network silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

# Architecture fields a ``llada`` config node may set directly.
ARCH_FIELDS = (
    "d_model",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "mlp_hidden_size",
    "vocab_size",
    "max_sequence_length",
    "rope_theta",
    "rms_norm_eps",
    "init_std",
    "weight_tying",
)


@dataclass
class LLaDAArch:
    """The shape of a LLaDA network (what ``config.json`` describes)."""

    d_model: int = 256  # hidden size
    n_layers: int = 4
    n_heads: int = 4  # query heads; head_dim = d_model // n_heads
    n_kv_heads: int = 4  # key/value heads (grouped-query attention when < n_heads)
    mlp_hidden_size: int = 768  # SwiGLU inner size
    vocab_size: int = 2048  # rows of the embedding and output head
    max_sequence_length: int = 1024  # longest canvas (RoPE table length)
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    init_std: float = 0.02  # std of random init (normal) for a fresh model
    weight_tying: bool = False  # output head shares the embedding matrix (LLaDA-8B: False)
    rope_full_precision: bool = True  # apply RoPE in float32 (official default)
    # The original config.json (when loaded from a folder), kept so an export preserves
    # every field we do not interpret (auto_map, token ids, ...).
    source_config: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def validate(self, where: str = "backbone") -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"{where}: d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"{where}: n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"{where}: head_dim = d_model / n_heads = {self.head_dim} must be even for RoPE")
        for name in ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "vocab_size", "max_sequence_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{where}.{name} must be >= 1, got {getattr(self, name)}")

    def num_parameters(self) -> int:
        d, kv = self.d_model, self.n_kv_heads * self.head_dim
        block = 2 * d * d + 2 * d * kv + 3 * d * self.mlp_hidden_size + 2 * d
        head = 0 if self.weight_tying else self.vocab_size * d
        return self.vocab_size * d + self.n_layers * block + d + head


# Named shapes. "tiny" and "small" are for tests and the toy model; "8b" is LLaDA-8B's shape.
PRESETS: dict[str, dict[str, Any]] = {
    # ~4.5 M parameters
    "tiny": dict(d_model=256, n_layers=4, n_heads=4, n_kv_heads=4, mlp_hidden_size=768, vocab_size=2048,
                 max_sequence_length=1024, rope_theta=10000.0),
    # ~29 M parameters, grouped-query attention (8 query heads, 4 kv heads)
    "small": dict(d_model=512, n_layers=8, n_heads=8, n_kv_heads=4, mlp_hidden_size=1536, vocab_size=4096,
                  max_sequence_length=2048, rope_theta=10000.0),
    # LLaDA-8B (Base/Instruct): ~8.0 B parameters
    "8b": dict(d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, mlp_hidden_size=12288, vocab_size=126464,
               max_sequence_length=4096, rope_theta=500000.0),
}


# config.json fields with the only values we implement: field -> (accepted values, meaning)
_REQUIRED_VALUES: dict[str, tuple[tuple[Any, ...], str]] = {
    "block_type": (("llama",), "LLaDALlamaBlock (separate q/k/v, SwiGLU)"),
    "layer_norm_type": (("rms",), "RMSNorm"),
    "activation_type": (("silu",), "SiLU gate (SwiGLU with up_proj)"),
    "rope": ((True,), "rotary position embedding"),
    "alibi": ((False, None), "no ALiBi"),
    "include_bias": ((False, None), "no linear biases"),
    "include_qkv_bias": ((False, None), "no q/k/v biases"),
    "bias_for_layer_norm": ((False, None), "no norm biases"),
    "attention_layer_norm": ((False, None), "no QK-norm"),
    "layer_norm_with_affine": ((True, None), "norms with a weight"),
    "input_emb_norm": ((False, None), "no embedding scaling"),
    "scale_logits": ((False, None), "unscaled logits"),
    "block_group_size": ((1, None), "one block per group"),
}


# Values of the released LLaDA-8B config.json, used for fields a config.json leaves out.
RELEASED_DEFAULTS: dict[str, Any] = {
    "block_type": "llama", "layer_norm_type": "rms", "activation_type": "silu", "rope": True,
    "rope_full_precision": True, "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "max_sequence_length": 4096,
    "weight_tying": False, "init_std": 0.02, "mlp_ratio": 4,
}


def arch_from_hf_config(cfg: dict[str, Any], source: str = "config.json") -> LLaDAArch:
    """Read an official LLaDA ``config.json`` dict; refuse variants we do not implement."""
    cfg = {**RELEASED_DEFAULTS, **{k: v for k, v in cfg.items()}}
    if cfg.get("model_type") not in (None, "llada"):
        raise ValueError(f"{source}: model_type is {cfg.get('model_type')!r}, expected 'llada'")
    for key, (ok, meaning) in _REQUIRED_VALUES.items():
        if key in cfg and cfg[key] not in ok:
            raise ValueError(
                f"{source}: {key}={cfg[key]!r} is not supported (the llada backbone implements {meaning}; "
                f"accepted: {', '.join(repr(v) for v in ok if v is not None)})"
            )
    missing = [k for k in ("d_model", "n_layers", "n_heads") if k not in cfg]
    if missing:
        raise ValueError(f"{source}: missing required field(s) {', '.join(missing)}")
    n_heads = int(cfg["n_heads"])
    if cfg.get("multi_query_attention"):
        n_kv = 1
    else:
        n_kv = int(cfg.get("n_kv_heads") or n_heads)
    d_model = int(cfg["d_model"])
    mlp = cfg.get("mlp_hidden_size") or int(cfg["mlp_ratio"]) * d_model
    rows = cfg.get("embedding_size") or cfg.get("vocab_size")
    if rows is None:
        raise ValueError(f"{source}: needs embedding_size or vocab_size")
    arch = LLaDAArch(
        d_model=d_model,
        n_layers=int(cfg["n_layers"]),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        mlp_hidden_size=int(mlp),
        vocab_size=int(rows),
        max_sequence_length=int(cfg["max_sequence_length"]),
        rope_theta=float(cfg["rope_theta"]),
        rms_norm_eps=float(cfg["rms_norm_eps"]),
        init_std=float(cfg["init_std"]),
        weight_tying=bool(cfg["weight_tying"]),
        rope_full_precision=bool(cfg["rope_full_precision"]),
        source_config=dict(cfg),
    )
    arch.validate(source)
    return arch


def arch_to_hf_config(arch: LLaDAArch, torch_dtype: str = "float32") -> dict[str, Any]:
    """An official-format ``config.json`` dict for ``arch`` (fields of the source config kept)."""
    cfg: dict[str, Any] = {
        # defaults of the released checkpoints, overridden by the source config, then by arch
        "activation_type": "silu",
        "alibi": False,
        "alibi_bias_max": 8.0,
        "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0,
        "attention_layer_norm": False,
        "attention_layer_norm_with_affine": True,
        "auto_map": {
            "AutoConfig": "configuration_llada.LLaDAConfig",
            "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
            "AutoModel": "modeling_llada.LLaDAModelLM",
        },
        "bias_for_layer_norm": False,
        "block_group_size": 1,
        "block_type": "llama",
        "embedding_dropout": 0.0,
        "flash_attention": False,
        "include_bias": False,
        "include_qkv_bias": False,
        "init_cutoff_factor": None,
        "init_device": "meta",
        "init_fn": "mitchell",
        "input_emb_norm": False,
        "layer_norm_type": "rms",
        "layer_norm_with_affine": True,
        "model_type": "llada",
        "multi_query_attention": None,
        "precision": "amp_bf16",
        "residual_dropout": 0.0,
        "rope": True,
        "scale_logits": False,
        "use_cache": False,
    }
    cfg.update(arch.source_config)
    cfg.update(
        d_model=arch.d_model,
        n_layers=arch.n_layers,
        n_heads=arch.n_heads,
        n_kv_heads=arch.n_kv_heads,
        mlp_hidden_size=arch.mlp_hidden_size,
        mlp_ratio=cfg.get("mlp_ratio", 4),
        vocab_size=arch.vocab_size,
        embedding_size=arch.vocab_size,
        max_sequence_length=arch.max_sequence_length,
        rope_theta=arch.rope_theta,
        rms_norm_eps=arch.rms_norm_eps,
        init_std=arch.init_std,
        weight_tying=arch.weight_tying,
        rope_full_precision=arch.rope_full_precision,
        torch_dtype=torch_dtype,
    )
    if cfg.get("multi_query_attention") and arch.n_kv_heads != 1:
        cfg["multi_query_attention"] = None
    return cfg


def resolve_arch(preset: Optional[str], overrides: dict[str, Any], where: str = "backbone") -> LLaDAArch:
    """Architecture from a preset name (default "tiny") with explicit fields on top."""
    name = preset or "tiny"
    if name not in PRESETS:
        raise ValueError(f"{where}.preset: unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    values = dict(PRESETS[name])
    given = {k: v for k, v in overrides.items() if v is not None}
    if "n_heads" in given and "n_kv_heads" not in given:
        given["n_kv_heads"] = given["n_heads"]  # plain multi-head attention unless asked otherwise
    values.update(given)
    arch = LLaDAArch(**values)
    arch.validate(where)
    return arch


def check_overrides_match(arch: LLaDAArch, overrides: dict[str, Any], where: str, source: str) -> None:
    """With a checkpoint path, explicit architecture fields must agree with its config.json."""
    clashes = [
        f"{where}.{k}={v!r} but {source} says {getattr(arch, k)!r}"
        for k, v in overrides.items()
        if v is not None and getattr(arch, k) != v
    ]
    if clashes:
        raise ValueError(
            "architecture settings disagree with the checkpoint: " + "; ".join(clashes)
            + f". Remove them from the config (the checkpoint's config.json decides the shape), "
            f"or use {where}.extend_vocab_to to grow the vocabulary after loading."
        )
