"""Built-in masking schedules, registered through the same hook third-party plugins use."""

from diffuspeech.hookspecs import hookimpl


@hookimpl
def register_schedulers(register):
    from .cosine import CosineSchedule
    from .linear import LinearSchedule
    from .per_modality import PerModalitySchedule

    register("cosine", CosineSchedule)
    register("linear", LinearSchedule)
    register("per_modality", PerModalitySchedule)
