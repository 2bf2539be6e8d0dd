"""Built-in attention policies, registered through the same hook third-party plugins use."""

from diffuspeech.hookspecs import hookimpl


@hookimpl
def register_attention(register):
    from .bidirectional import BidirectionalAttention
    from .block_causal import BlockCausalAttention
    from .causal import CausalAttention
    from .hybrid import HybridAttention

    register("bidirectional", BidirectionalAttention)
    register("causal", CausalAttention)
    register("block_causal", BlockCausalAttention)
    register("hybrid", HybridAttention)
