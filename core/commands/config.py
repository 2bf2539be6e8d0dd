"""``diffuspeech config validate|show FILE [key=value ...]``."""

from __future__ import annotations

from omegaconf import OmegaConf

from ..compose import load_config, validate_config


def add_parser(sub) -> None:
    p = sub.add_parser("config", help="validate or print a config (with dotlist overrides)")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    for action, help_text in (
        ("validate", "check every component and section without building models"),
        ("show", "print the resolved config (after overrides)"),
    ):
        a = csub.add_parser(action, help=help_text)
        a.add_argument("file", help="YAML config")
        a.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. scheduler.speech.name=linear")
        a.set_defaults(func=run)


def run(args) -> int:
    cfg = load_config(args.file, args.overrides)
    validate_config(cfg)
    if args.config_command == "show":
        print(OmegaConf.to_yaml(cfg, resolve=True), end="")
    else:
        print(f"{args.file}: OK")
    return 0
