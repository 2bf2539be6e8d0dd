"""Built-in noisers, registered through the same hook third-party plugins use."""

from diffuspeech.hookspecs import hookimpl


@hookimpl
def register_noisers(register):
    from .hierarchical_block import HierarchicalBlockNoiser
    from .iid import IIDNoiser

    register("iid", IIDNoiser)
    register("hierarchical_block", HierarchicalBlockNoiser)
