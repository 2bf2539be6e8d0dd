"""diffuspeech: speech language models on masked (absorbing-state) discrete diffusion.

The public API a plugin author uses: the contracts (one per component kind), the helpers their
implementations share, the registry and composition. ``Pipeline`` and ``SpeechDiffusionModel``
load on first use, so ``import diffuspeech`` stays light.
"""

from .adapter import Adapter
from .attention import AttentionPolicy, apply_padding, check_inputs, position_grid
from .backbone import (
    Backbone,
    KVCache,
    check_attention_mask,
    check_inputs_embeds,
    parse_dtype,
    resized_rows,
    supports_inputs_embeds,
    supports_kv_cache,
)
from .component import Component
from .compose import build_component, load_config, validate_config
from .encoder import EncoderOutput, SpeechEncoder
from .errors import ConfigError
from .hookspecs import hookimpl
from .noiser import Noiser
from .objective import LossOutput, Objective, ObjectiveContext
from .registry import get_registry
from .sampler import Sampler, topk_mask
from .scheduler import MaskScheduler
from .tokenizer import SpeechTokenizer
from .vocoder import Vocoder, VocoderCompatibilityError, VocoderInputError, check_compatible, validate_units

__version__ = "0.1.0"

__all__ = [
    # contracts
    "Adapter", "AttentionPolicy", "Backbone", "Component", "MaskScheduler", "Noiser", "Objective", "Sampler", "SpeechEncoder",
    "SpeechTokenizer", "Vocoder",
    # what implementations share
    "EncoderOutput", "KVCache", "LossOutput", "ObjectiveContext", "VocoderCompatibilityError", "VocoderInputError", "apply_padding",
    "check_attention_mask", "check_compatible", "check_inputs_embeds", "check_inputs", "parse_dtype", "position_grid", "resized_rows",
    "supports_inputs_embeds", "supports_kv_cache", "topk_mask", "validate_units",
    # registry and composition
    "ConfigError", "build_component", "get_registry", "hookimpl", "load_config", "validate_config",
    # models (loaded on first use)
    "Pipeline", "SpeechDiffusionModel",
    "__version__",
]

_LAZY = {"Pipeline": "diffuspeech.pipeline", "SpeechDiffusionModel": "diffuspeech.model"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'diffuspeech' has no attribute {name!r}")
