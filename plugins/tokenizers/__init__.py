"""Built-in tokenizers, their commands and bench, registered through the hooks third-party plugins use."""

from diffuspeech.hookspecs import hookimpl


@hookimpl
def register_tokenizers(register):
    from .hubert import HubertTokenizer
    from .mel_kmeans import MelKMeansTokenizer

    register("hubert", HubertTokenizer)
    register("mel_kmeans", MelKMeansTokenizer)


@hookimpl
def register_commands(register):
    register("fit-quantizer", "diffuspeech.plugins.tokenizers.fit_quantizer:configure",
             help="fit k-means centroids on a tokenizer's features over a folder or manifest")
    register("convert-quantizer", "diffuspeech.plugins.tokenizers.convert_quantizer:configure",
             help="convert a scikit-learn/joblib k-means pickle to a centroids .safetensors (needs --trust-pickle)")


@hookimpl
def register_benches(register):
    register("tokenizer", "diffuspeech.plugins.tokenizers.bench:run", add_arguments="diffuspeech.plugins.tokenizers.bench:add_arguments",
             help="real-time factor of the hubert (base size, 500 units) and mel_kmeans tokenizers on 10 s of audio")
