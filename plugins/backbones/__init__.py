"""Built-in backbones and their bench, registered through the hooks third-party plugins use."""

from diffuspeech.hookspecs import hookimpl


@hookimpl
def register_backbones(register):
    from .hf_decoder import HFDecoderBackbone
    from .llada.backbone import LLaDABackbone

    register("llada", LLaDABackbone)
    register("hf_decoder", HFDecoderBackbone)


@hookimpl
def register_benches(register):
    register("backbone", "diffuspeech.plugins.backbones.llada.bench:run", add_arguments="diffuspeech.plugins.backbones.llada.bench:add_arguments",
             help="llada forward tokens/s (tiny, small on CPU) and 8B-shaped bf16 latency on CUDA")
