"""Built-in backbones, registered through the same hook third-party plugins use."""

from diffuspeech.hookspecs import hookimpl


@hookimpl
def register_backbones(register):
    from .hf_decoder import HFDecoderBackbone
    from .llada import LLaDABackbone

    register("llada", LLaDABackbone)
    register("hf_decoder", HFDecoderBackbone)
