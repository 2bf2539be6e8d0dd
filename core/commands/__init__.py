"""Core's own CLI commands, registered through the ``register_commands`` hook like a plugin's.

Each command lives in its own module with ``configure(parser)`` (arguments, then
``parser.set_defaults(func=run)``) and ``run(args) -> int``; the references below are lazy, so
``diffuspeech --help`` imports none of them.
"""

from ..hookspecs import hookimpl


@hookimpl
def register_commands(register):
    register("train", "diffuspeech.commands.train:configure", help="train a model: stages, checkpoints, --resume; single process or torchrun")
    register("generate", "diffuspeech.commands.generate:configure", help="run a task (s2s, s2t, asr, tts, ...) on wav files or text")
    register("tokenize", "diffuspeech.commands.tokenize:configure", help="turn the audio of a JSONL manifest into unit shards + index.jsonl (resumable)")
    register("config validate", "diffuspeech.commands.config:configure_validate", help="check every component and section without building models")
    register("config show", "diffuspeech.commands.config:configure_show", help="print the resolved config (after overrides)")
    register("plugins", "diffuspeech.commands.plugins:configure",
             help="list registered components, commands, benches and models, and plugins that failed to load")
    register("bench", "diffuspeech.commands.bench:configure", help="run a benchmark and print its figures (JSON with --json)")
    register("serve", "diffuspeech.commands.serve:configure", help="a local web page (and JSON API) to talk to a model and watch it denoise")
