"""``diffuspeech bench NAME [--json]``: benchmarks from ``diffuspeech.bench``."""

from __future__ import annotations

import importlib
import json
import pkgutil

from .. import bench


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark and print its figures (JSON with --json)")
    bsub = p.add_subparsers(dest="bench_name", metavar="NAME", required=True)
    for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{bench.__name__}.{info.name}")
        b = bsub.add_parser(info.name, help=getattr(module, "DESCRIPTION", ""))
        b.add_argument("--json", action="store_true", help="print one JSON line")
        module.add_arguments(b)
        b.set_defaults(func=run, bench_module=module)


def run(args) -> int:
    result = args.bench_module.run(args)
    if args.json:
        print(json.dumps(result))
    else:
        width = max((len(k) for k in result), default=0)
        for k, v in result.items():
            print(f"{k:<{width}}  {v}")
    return 0
