"""Built-in training objectives, registered through the same hook third-party plugins use."""

from diffuspeech.hookspecs import hookimpl


@hookimpl
def register_objectives(register):
    from .autoregressive import AutoregressiveObjective
    from .diffusion import MaskedDiffusionObjective
    from .hybrid import HybridObjective
    from .self_distillation import SelfDistillationObjective

    register("diffusion", MaskedDiffusionObjective)
    register("autoregressive", AutoregressiveObjective)
    register("hybrid", HybridObjective)
    register("self_distillation", SelfDistillationObjective)
