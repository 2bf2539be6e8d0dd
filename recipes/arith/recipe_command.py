"""``diffuspeech recipe RECIPE ACTION [...]``: end-to-end recipes (``recipe arith prepare``).

Adding an action is one function decorated with ``@action("<recipe>")``: it receives the
recipe's sub-parsers, adds its own parser and sets ``func``. Recipes and their actions are
listed in the order they are declared.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

_ACTIONS: dict[str, list[Callable[[argparse._SubParsersAction], None]]] = {}


def action(recipe: str):
    """Register ``fn(subparsers)`` as an action of ``recipe``."""

    def deco(fn: Callable[[argparse._SubParsersAction], None]):
        _ACTIONS.setdefault(recipe, []).append(fn)
        return fn

    return deco


def configure(r) -> None:
    asub = r.add_subparsers(dest="recipe_action", metavar="ACTION", required=True)
    for add in _ACTIONS["arith"]:
        add(asub)


def _int_pair(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH integers, got {text!r}") from None
    if lo > hi:
        raise argparse.ArgumentTypeError(f"LOW must be <= HIGH, got {text!r}")
    return lo, hi


@action("arith")
def _arith_prepare(sub) -> None:
    from .corpus import ArithCorpusConfig

    d = ArithCorpusConfig()
    p = sub.add_parser(
        "prepare",
        help="generate the spoken-arithmetic corpus with espeak-ng (train/dev JSONL manifests + 16 kHz wavs)",
        description="Questions 'what is A plus/minus B' spoken by every non-reserved English espeak-ng voice "
        "(accent + variant) at random speed and pitch, with thinking traces and answers in the assistant voice.",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--questions-per-voice", type=int, default=d.questions_per_voice,
                   help=f"distinct questions per (accent, variant) voice: the corpus size knob (default {d.questions_per_voice})")
    p.add_argument("--dev-variants", type=int, default=d.dev_variants,
                   help=f"variants held out for dev, all accents (default {d.dev_variants})")
    p.add_argument("--dev-combo-fraction", type=float, default=d.dev_combo_fraction,
                   help=f"share of train-voice utterances held out as unseen (question, voice) pairs (default {d.dev_combo_fraction})")
    p.add_argument("--languages", nargs="+", default=list(d.languages), metavar="LANG",
                   help="English accents to combine with the variants (default: all eight)")
    p.add_argument("--exclude-variants", nargs="*", default=[], metavar="ID", help="more variant ids to leave out")
    p.add_argument("--speed", type=_int_pair, default=d.speed_range, metavar="LOW,HIGH",
                   help=f"speaking rate range in words per minute (default {d.speed_range[0]},{d.speed_range[1]})")
    p.add_argument("--pitch", type=_int_pair, default=d.pitch_range, metavar="LOW,HIGH",
                   help=f"espeak-ng base pitch range 0..100 (default {d.pitch_range[0]},{d.pitch_range[1]})")
    p.add_argument("--workers", type=int, default=d.workers,
                   help=f"synthesis processes; 0 = in-process, not byte-reproducible (default {d.workers})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_arith_prepare)


def _run_arith_prepare(args) -> int:
    from . import require_extra

    require_extra("diffuspeech recipe arith")
    from .corpus import ArithCorpusConfig, prepare
    from .espeak import EspeakError

    cfg = ArithCorpusConfig(
        out=args.out,
        seed=args.seed,
        questions_per_voice=args.questions_per_voice,
        dev_variants=args.dev_variants,
        dev_combo_fraction=args.dev_combo_fraction,
        languages=tuple(args.languages),
        speed_range=tuple(args.speed),
        pitch_range=tuple(args.pitch),
        workers=args.workers,
        extra_excluded=tuple(args.exclude_variants),
    )
    try:
        info = prepare(cfg, show_progress=not args.no_progress)
    except (EspeakError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    c = info["counts"]
    print(
        f"{args.out}: {c['train']} train + {c['dev']} dev utterances "
        f"({info['hours_of_question_audio']:.2f} h of questions, {len(info['train_variants'])} train / "
        f"{len(info['dev_variants'])} dev variants x {len(info['languages'])} accents) in {info['generation_seconds']:.1f} s"
    )
    return 0


def _rates(text: str) -> list[float]:
    """``"0.9,1.1"`` -> ``[0.9, 1.1]``; ``"none"`` or ``""`` -> ``[]``."""
    import argparse
    import math

    if text.strip().lower() in ("", "none"):
        return []
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated rates such as 0.9,1.1 (or none), got {text!r}") from None
    if any(not (math.isfinite(r) and r > 0) for r in rates):
        raise argparse.ArgumentTypeError(f"rates must be finite and > 0, got {text!r}")
    if 1.0 in rates or len(set(rates)) < len(rates):
        raise argparse.ArgumentTypeError(f"rates must be distinct and not 1.0 (the questions as spoken are always kept), got {text!r}")
    return rates


@action("arith")
def _arith_train(sub) -> None:
    from .train import ArithTrainConfig

    d = ArithTrainConfig()
    p = sub.add_parser(
        "train",
        help="fit the units, check the spoken-channel ceiling, train the backbone (stage 1 then 2) and save the model",
        description="Reproduces the embedded default model from a corpus made by `recipe arith prepare` "
        "(about 45 minutes on 2 CPU cores). Extra key=value arguments override the recipe's config "
        "(recipes/arith/arith.yaml), e.g. train.stages.1.steps=100 for ablations.",
    )
    p.add_argument("--data", default=d.data, help=f"corpus folder (default {d.data})")
    p.add_argument("--out", default=d.out, help=f"run folder (default {d.out})")
    p.add_argument("--question-units", type=int, default=d.question_units, help=f"k-means units for question audio (default {d.question_units})")
    p.add_argument(
        "--speed-perturb", type=_rates, metavar="R1,R2,...", default=d.speed_perturb,
        help="add a copy of every training question played R times faster for each rate (tempo and formants "
        f"move together), e.g. 0.9,1.1; 'none' for no copies (default {','.join(f'{r:g}' for r in d.speed_perturb) or 'none'})",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--scale", type=float, default=d.scale, help="multiply every stage's steps (e.g. 0.01 for a smoke run)")
    p.add_argument("--install", action="store_true", help="install the result as the package's embedded default model")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("overrides", nargs="*", default=[], help="config overrides key=value")
    p.set_defaults(func=_run_arith_train)


def _run_arith_train(args) -> int:
    from . import require_extra

    require_extra("diffuspeech recipe arith")
    import json

    from .train import ArithTrainConfig, run

    try:
        report = run(
            ArithTrainConfig(
                data=args.data, out=args.out, question_units=args.question_units, speed_perturb=list(args.speed_perturb), seed=args.seed, scale=args.scale,
                overrides=list(args.overrides), install=args.install, resume=args.resume,
            )
        )
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in report.items() if k != "dev"}, indent=2, default=str))
    return 0


@action("arith")
def _arith_diffa(sub) -> None:
    from .diffa import ArithDiffaConfig

    d = ArithDiffaConfig()
    p = sub.add_parser(
        "diffa",
        help="DIFFA: train a text diffusion LM, freeze it, train speech adapters; with the semantic-only ablation",
        description="Trains the DIFFA toy (recipes/arith/diffa.yaml) on a corpus made by `recipe arith prepare`: the text LM, "
        "then adapters only (ASR, then spoken QA + speech rate), and the semantic-only ablation from the same frozen LM; "
        "evaluates both on the dev and unseen-voice splits. Extra key=value arguments override diffa.yaml.",
    )
    p.add_argument("--data", default=d.data, help=f"corpus folder (default {d.data})")
    p.add_argument("--out", default=d.out, help=f"run folder (default {d.out})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--scale", type=float, default=d.scale, help="multiply every stage's steps (e.g. 0.01 for a smoke run)")
    p.add_argument("--no-ablation", action="store_true", help="skip the semantic-only adapters")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate the first N rows of each dev split")
    p.add_argument("--install", action="store_true", help="install the model as the embedded `arith-diffa`")
    p.add_argument("overrides", nargs="*", default=[], help="config overrides key=value")
    p.set_defaults(func=_run_arith_diffa)


def _run_arith_diffa(args) -> int:
    from . import require_extra

    require_extra("diffuspeech recipe arith diffa")
    import json

    from .diffa import ArithDiffaConfig, run

    try:
        report = run(ArithDiffaConfig(data=args.data, out=args.out, seed=args.seed, scale=args.scale, ablation=not args.no_ablation,
                                      eval_limit=args.eval_limit, overrides=list(args.overrides), install=args.install))
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, default=str))
    return 0
