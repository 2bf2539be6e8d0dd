"""diffuspeech: speech language models on masked (absorbing-state) discrete diffusion."""

from .attention import AttentionPolicy
from .backbone import Backbone
from .component import Component
from .compose import ConfigError, build_component, load_config, validate_config
from .hookspecs import hookimpl
from .noiser import Noiser
from .registry import get_registry
from .sampler import Sampler
from .scheduler import MaskScheduler
from .tokenizer import SpeechTokenizer
from .vocoder import Vocoder

__version__ = "0.1.0"

__all__ = [
    "AttentionPolicy",
    "Backbone",
    "Component",
    "ConfigError",
    "MaskScheduler",
    "Noiser",
    "Sampler",
    "SpeechTokenizer",
    "Vocoder",
    "build_component",
    "get_registry",
    "hookimpl",
    "load_config",
    "validate_config",
    "__version__",
]
