"""``diffuspeech config validate|show (FILE | --model NAME|DIR) [key=value ...] [--allow-missing]``."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from ..compose import load_config, validate_config
from ..errors import ConfigError
from .arguments import allow_intermixed


def configure_validate(p) -> None:
    _arguments(p)
    p.set_defaults(func=run, config_command="validate")


def configure_show(p) -> None:
    _arguments(p)
    p.set_defaults(func=run, config_command="show")


def _arguments(p) -> None:
    p.add_argument("file", nargs="?", help="YAML config (or give --model)")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. scheduler.speech.name=linear")
    p.add_argument("--model", help="a saved model folder or a registered model's name: its config.yaml instead of FILE")
    p.add_argument("--allow-missing", action="store_true", help="accept values left as ??? (checked as unset) and list them")
    allow_intermixed(p)


def run(args) -> int:
    if bool(args.file) == bool(args.model):
        if args.file and "=" in args.file:  # `config validate --model arith key=value`: FILE took an override
            args.overrides, args.file = [args.file, *args.overrides], None
        else:
            raise ConfigError("give a config FILE or --model NAME|DIR (one of them)")
    source = args.file
    if args.model:
        from ..model import CONFIG, resolve_model_dir

        source = resolve_model_dir(args.model) / CONFIG
    cfg = load_config(source, args.overrides)
    missing = validate_config(cfg, allow_missing=args.allow_missing, base_dir=Path(source).parent)
    if args.config_command == "show":
        print(OmegaConf.to_yaml(cfg, resolve=True), end="")
    else:
        note = f" ({len(missing)} values left as ???: {', '.join(missing)})" if missing else ""
        print(f"{args.model or args.file}: OK{note}")
    return 0
