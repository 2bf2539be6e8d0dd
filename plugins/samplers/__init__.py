"""Built-in decoding strategies, registered through the same hook third-party plugins use."""

from diffuspeech.hookspecs import hookimpl


@hookimpl
def register_samplers(register):
    from .entropy import EntropySampler
    from .low_confidence import LowConfidenceSampler
    from .margin import MarginSampler
    from .random import RandomSampler
    from .threshold import ThresholdSampler

    register("low_confidence", LowConfidenceSampler)
    register("random", RandomSampler)
    register("threshold", ThresholdSampler)
    register("margin", MarginSampler)
    register("entropy", EntropySampler)
