"""The spoken-arithmetic recipe: the embedded default model and everything that made it.

    corpus.py        questions, voices and the espeak-ng corpus (``recipe arith prepare``)
    train.py         units, vocoder-free assets and the staged training (``recipe arith train``)
    evaluate.py      ``eval arith``: spoken-answer accuracy, thinking exact, ASR WER, ceilings
    judge.py         the pocketsphinx number-word judge; espeak.py, number_words.py its helpers
    demo.py          ``diffuspeech demo``
    models/          the embedded models (``--model arith | arith-mdm | arith-ar``)

Its dependencies (espeakng-loader, pocketsphinx, matplotlib, jiwer) are the
``diffuspeech[arith]`` extra; the hooks below import none of them.
"""

import importlib.util

from diffuspeech.errors import MissingDependencyError
from diffuspeech.hookspecs import hookimpl

from . import models

EXTRA = {  # module -> the PyPI package of the `arith` extra that provides it
    "espeakng_loader": "espeakng-loader", "pocketsphinx": "pocketsphinx", "matplotlib": "matplotlib", "jiwer": "jiwer",
}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install counts as missing
        return False


def require_extra(what: str) -> None:
    """Raise :class:`MissingDependencyError` naming the missing packages of ``diffuspeech[arith]``."""
    missing = [package for module, package in EXTRA.items() if not _importable(module)]
    if missing:
        raise MissingDependencyError(
            f"{what} needs the arith recipe's dependencies ({', '.join(missing)} missing): pip install 'diffuspeech[arith]'"
        )


@hookimpl
def register_commands(register):
    register("demo", "diffuspeech.recipes.arith.demo:configure",
             help="the main job: ask the embedded model a spoken question, get a thought and a spoken answer")
    register("eval arith", "diffuspeech.recipes.arith.eval_command:configure",
             help="spoken-answer accuracy, thinking exact match, S2T, ASR WER, TTS, ceilings")
    register("recipe arith", "diffuspeech.recipes.arith.recipe_command:configure",
             help="the spoken-arithmetic default model: `prepare` the corpus, `train` the models")


@hookimpl
def register_benches(register):
    register("judge", "diffuspeech.recipes.arith.bench:run", add_arguments="diffuspeech.recipes.arith.bench:add_arguments",
             help="pocketsphinx number judge: assistant-voice accuracy, noise false accepts, latency")
    register("stream", "diffuspeech.recipes.arith.stream_bench:run", add_arguments="diffuspeech.recipes.arith.stream_bench:add_arguments",
             help="streaming TTS: first-chunk latency and units/s at 1/4/16 steps per block vs the autoregressive model")


@hookimpl
def register_models(register):
    models.register(register)
