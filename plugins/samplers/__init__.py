"""Built-in decoding strategies, registered through the same hook third-party plugins use."""

from diffuspeech.hookspecs import hookimpl


@hookimpl
def register_samplers(register):
    from .low_confidence import LowConfidenceSampler
    from .random import RandomSampler
    from .threshold import ThresholdSampler

    register("low_confidence", LowConfidenceSampler)
    register("random", RandomSampler)
    register("threshold", ThresholdSampler)
