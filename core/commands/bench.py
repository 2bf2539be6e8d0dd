"""``diffuspeech bench NAME [--json]``: the benchmarks registered through ``register_benches``."""

from __future__ import annotations

import json

from ..registry import get_registry, resolve_ref


def configure(p) -> None:
    bsub = p.add_subparsers(dest="bench_name", metavar="NAME", required=True)
    for reg in get_registry().registrations("benches"):
        b = bsub.add_parser(reg.name, help=reg.info.get("help", ""), description=reg.info.get("help", ""))
        b.add_argument("--json", action="store_true", help="print one JSON line")
        if reg.info.get("add_arguments") is not None:
            resolve_ref(reg.info["add_arguments"])(b)
        b.set_defaults(func=run, bench_run=reg.cls)


def run(args) -> int:
    result = resolve_ref(args.bench_run)(args)
    if args.json:
        print(json.dumps(result))
    else:
        width = max((len(k) for k in result), default=0)
        for k, v in result.items():
            print(f"{k:<{width}}  {v}")
    return 0
