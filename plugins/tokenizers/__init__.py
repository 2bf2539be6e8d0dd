"""Built-in tokenizers, registered through the same hook third-party plugins use."""

from diffuspeech.hookspecs import hookimpl


@hookimpl
def register_tokenizers(register):
    from .hubert import HubertTokenizer
    from .mel_kmeans import MelKMeansTokenizer

    register("hubert", HubertTokenizer)
    register("mel_kmeans", MelKMeansTokenizer)
