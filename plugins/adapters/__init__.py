"""Built-in adapters, registered through the same hook third-party plugins use."""

from diffuspeech.hookspecs import hookimpl


@hookimpl
def register_adapters(register):
    from .qformer import QFormerAdapter
    from .semantic import SemanticAdapter

    register("semantic", SemanticAdapter)
    register("qformer", QFormerAdapter)
