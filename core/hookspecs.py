"""The plugin contract: pluggy hook specifications.

Every hook receives a ``register`` callback. A plugin calls ``register("name", SomeClass)``
once per component it provides (``register("name", obj, **info)`` for commands, benches
and models). Built-in components are registered through these very
hooks (see ``diffuspeech/plugins/*/__init__.py``), so they have no privileges a third-party
plugin lacks.

    from diffuspeech import hookimpl

    @hookimpl
    def register_vocoders(register):
        register("my_vocoder", MyVocoder)
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "diffuspeech"  # pluggy project name == entry-point group

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_tokenizers(register):
    """Register speech tokenizers (subclasses of ``diffuspeech.SpeechTokenizer``)."""


@hookspec
def register_backbones(register):
    """Register backbones (subclasses of ``diffuspeech.Backbone``)."""


@hookspec
def register_schedulers(register):
    """Register masking schedules (subclasses of ``diffuspeech.MaskScheduler``)."""


@hookspec
def register_vocoders(register):
    """Register vocoders (subclasses of ``diffuspeech.Vocoder``)."""


@hookspec
def register_samplers(register):
    """Register decoding strategies (subclasses of ``diffuspeech.Sampler``)."""


@hookspec
def register_attention(register):
    """Register attention policies (subclasses of ``diffuspeech.AttentionPolicy``)."""


@hookspec
def register_noisers(register):
    """Register training noisers (subclasses of ``diffuspeech.Noiser``)."""


@hookspec
def register_objectives(register):
    """Register training objectives (subclasses of ``diffuspeech.Objective``)."""


@hookspec
def register_encoders(register):
    """Register continuous speech encoders (subclasses of ``diffuspeech.SpeechEncoder``)."""


@hookspec
def register_adapters(register):
    """Register adapters from encoder features to backbone embeddings (subclasses of ``diffuspeech.Adapter``)."""


@hookspec
def register_commands(register):
    """Register CLI sub-commands: ``register("name", configure, help="...", description="...")``.

    ``configure(parser)`` adds the command's arguments to its ``argparse`` parser and calls
    ``parser.set_defaults(func=run)`` with ``run(args) -> int``. A name of several words
    (``"eval arith"``) nests under a group (``diffuspeech eval arith``)."""


@hookspec
def register_benches(register):
    """Register benchmarks for ``diffuspeech bench NAME``: ``register("name", run, help="...",
    add_arguments=fn)``; ``run(args) -> dict`` of figures, ``add_arguments(parser)`` its options."""


@hookspec
def register_models(register):
    """Register model folders usable as ``--model NAME``: ``register("name", folder,
    description="...", default=False)``; at most one registered model should set ``default=True``."""
