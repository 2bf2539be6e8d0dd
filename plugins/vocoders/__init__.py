"""Built-in vocoders, registered through the same hook third-party plugins use."""

from diffuspeech.hookspecs import hookimpl


@hookimpl
def register_vocoders(register):
    from .griffinlim import GriffinLimVocoder
    from .unit_hifigan import UnitHifiganVocoder

    register("griffinlim", GriffinLimVocoder)
    register("unit_hifigan", UnitHifiganVocoder)
