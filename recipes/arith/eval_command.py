"""``diffuspeech eval arith [--model DIR] [--data DIR] [overrides]``: evaluate on a dev manifest."""

from __future__ import annotations

import json
from pathlib import Path

from diffuspeech.model import model_help

TASKS = ("s2s", "s2t", "asr", "tts")


def configure(a) -> None:
    a.add_argument("--data", default="arith-corpus", help="corpus folder from `recipe arith prepare` (default ./arith-corpus)")
    a.add_argument("--split", default="dev", help="manifest to evaluate: <data>/<split>.jsonl (default dev)")
    a.add_argument("--model", help=model_help())
    a.add_argument("--out", default="eval-arith", help="output folder for metrics.json, metrics.md, trajectory.png")
    a.add_argument("--limit", type=int, help="evaluate the first N rows only")
    a.add_argument("--batch-size", type=int, default=32)
    a.add_argument(
        "--tasks", nargs="+", default=list(TASKS), metavar="TASK",
        help=f"tasks to evaluate: {' '.join(TASKS)} (default all); key=value words after it are overrides too",
    )
    a.add_argument("--no-progress", action="store_true")
    a.add_argument("overrides", nargs="*", help="model config overrides, e.g. generation.steps=8 sampler.name=threshold")
    a.set_defaults(func=run)


def run(args) -> int:
    import sys

    from . import require_extra

    require_extra("diffuspeech eval arith")
    from .evaluate import ArithEvalConfig, evaluate

    tasks = [t for t in args.tasks if "=" not in t]  # `--tasks s2s generation.steps=4`: the override is not a task
    overrides = [t for t in args.tasks if "=" in t] + list(args.overrides)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        print(f"error: --tasks: unknown or missing task(s) {unknown}; choose from {', '.join(TASKS)}", file=sys.stderr)
        return 2
    metrics = evaluate(
        ArithEvalConfig(
            data=args.data, split=args.split, model=args.model, out=args.out, limit=args.limit,
            batch_size=args.batch_size, overrides=overrides, tasks=tuple(tasks), progress=not args.no_progress,
        )
    )
    print((Path(args.out) / "metrics.md").read_text(), end="")
    print(json.dumps(metrics))
    return 0
