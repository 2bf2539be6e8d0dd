"""``diffuspeech train CONFIG [key=value ...] [--out DIR] [--resume]``.

Under torchrun (``torchrun --nproc_per_node N -m diffuspeech.cli train ...``) every process
runs this command; rank 0 logs, writes checkpoints and saves the models.
"""

from __future__ import annotations

import logging
import os
import sys

from .arguments import allow_intermixed


def configure(p) -> None:
    p.add_argument("config", help="YAML config with model sections plus `train:` and `data:`")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. data.manifest=data/train.jsonl train.stages.0.steps=50")
    p.add_argument("--out", default=None, help="run folder (default: train.out, else runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    allow_intermixed(p)  # overrides may come after --out / --resume, as in generate
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training.data import DataError
    from ..training.trainer import train

    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s" if "WORLD_SIZE" in os.environ else "%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        result = train(args.config, args.overrides, out=args.out, resume=args.resume)
    except DataError as exc:
        print(f"data error: {exc}", file=sys.stderr)
        return 2
    if rank == 0:
        last = max(result.losses) if result.losses else None
        tail = f"; last train loss {result.losses[last]:.4f} at step {last}" if last is not None else ""
        print(f"trained model saved to {result.model_dir}{tail}")
    return 0
