"""Built-in samplers, registered through the same hook third-party plugins use."""

from diffuspeech.hookspecs import hookimpl


@hookimpl
def register_samplers(register):
    pass
