"""``diffuspeech config validate|show FILE [key=value ...]``."""

from __future__ import annotations

from omegaconf import OmegaConf

from ..compose import load_config, validate_config


def configure_validate(p) -> None:
    _arguments(p)
    p.set_defaults(func=run, config_command="validate")


def configure_show(p) -> None:
    _arguments(p)
    p.set_defaults(func=run, config_command="show")


def _arguments(p) -> None:
    p.add_argument("file", help="YAML config")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. scheduler.speech.name=linear")


def run(args) -> int:
    cfg = load_config(args.file, args.overrides)
    validate_config(cfg)
    if args.config_command == "show":
        print(OmegaConf.to_yaml(cfg, resolve=True), end="")
    else:
        print(f"{args.file}: OK")
    return 0
