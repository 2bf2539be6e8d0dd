"""``diffuspeech train-vocoder``: train a unit HiFi-GAN on (units, waveform) pairs.

    diffuspeech train-vocoder --manifest pairs.jsonl --out runs/voc --preset tiny --num-units 200
    diffuspeech train-vocoder --manifest wavs.jsonl --tokenizer-config tok.yaml --out runs/voc
    diffuspeech train-vocoder --out runs/voc --resume --steps 4000     # continue a run

The trained generator is ``RUN/checkpoint`` (``vocoder: {name: unit_hifigan, path: RUN/checkpoint}``).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from diffuspeech.errors import ConfigError

# CLI flag -> VocoderTrainConfig field (None defaults: only flags the user gave are applied)
TRAIN_FLAGS = {
    "steps": int, "batch_size": int, "segment_frames": int, "lr": float, "gan": str, "gan_start_step": int,
    "mel_weight": float, "stft_weight": float, "save_every": int, "sample_every": int, "num_samples": int,
    "log_every": int, "seed": int, "device": str,
}


def configure(p) -> None:
    p.add_argument("--manifest", help="JSONL: {'audio': path, 'units': [..] (optional), 'id', 'speaker' (optional)}")
    p.add_argument("--out", required=True, help="run folder (checkpoint/, samples/, metrics.jsonl)")
    p.add_argument("--tokenizer-config", help="YAML with a tokenizer node, to compute units missing from the manifest")
    p.add_argument("--preset", choices=["tiny", "base25hz"], help="architecture + training preset (default tiny)")
    p.add_argument("--num-units", type=int, help="codebook size K (default: the tokenizer's)")
    p.add_argument("--arch", action="append", default=[], metavar="KEY=VALUE",
                   help="override an architecture setting, e.g. --arch upsample_initial_channel=128 (repeatable)")
    for name, tp in TRAIN_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=tp, default=None)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint with OUT/train_config.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _parse_arch(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--arch {item!r} must look like key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("diffuspeech", "speechbrain", "torch"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def run(args) -> int:
    from diffuspeech.commands.audio_inputs import build_tokenizer, tokenizer_node
    from diffuspeech.vocoder import check_compatible

    from .arch import UnitHifiganArch, preset
    from .train import VocoderTrainer, VocoderTrainingError, read_training_pairs, resolve_train_config

    out = Path(args.out)
    config_path = out / "train_config.json"
    given: dict[str, Any] = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None}
    if args.preset:
        given["preset"] = args.preset
    if args.arch:
        given["arch"] = _parse_arch(args.arch)
    try:
        if args.resume:
            if not config_path.is_file():
                raise VocoderTrainingError(f"--resume: {config_path} not found; start the run without --resume")
            saved = json.loads(config_path.read_text())
            if args.num_units is not None:
                given["num_units"] = args.num_units
            for flag, key in ((args.manifest, "manifest"), (args.tokenizer_config, "tokenizer_config")):
                if flag is not None and flag != saved["data"].get(key):
                    raise VocoderTrainingError(f"--resume: --{key.replace('_', '-')} differs from the run's; omit it")
            config = resolve_train_config(given, saved["training"])
            arch = UnitHifiganArch.from_dict(saved["arch"])
            data = saved["data"]
        else:
            if config_path.exists():
                raise VocoderTrainingError(f"{out} already holds a run; pass --resume to continue it or pick a new --out")
            if not args.manifest:
                raise VocoderTrainingError("--manifest is required for a new run")
            config = resolve_train_config(given, None)
            data = {
                "manifest": str(Path(args.manifest).resolve()),
                "tokenizer_config": str(Path(args.tokenizer_config).resolve()) if args.tokenizer_config else None,
            }
        tokenizer = build_tokenizer(tokenizer_node(data["tokenizer_config"], [])) if data["tokenizer_config"] else None
        if not args.resume:
            num_units = args.num_units or (tokenizer.num_units if tokenizer is not None else 0)
            if num_units < 1:
                raise VocoderTrainingError("--num-units is required when no --tokenizer-config gives the codebook size")
            config.num_units = num_units
            try:
                arch = preset(config.preset, num_units=num_units, **config.arch)
                arch.validate("--arch")
            except (TypeError, ValueError) as exc:
                raise VocoderTrainingError(str(exc)) from None
        if tokenizer is not None:
            check_compatible(SimpleNamespace(num_units=arch.num_units, frame_rate=arch.frame_rate), tokenizer)
        pairs = read_training_pairs(
            data["manifest"], arch.sample_rate, arch.hop_length, arch.num_units, tokenizer, progress=not args.no_progress
        )
        trainer = VocoderTrainer(config, out, arch)
        if args.resume:
            trainer.load_checkpoint()
        out.mkdir(parents=True, exist_ok=True)
        record = {"training": dataclasses.asdict(config), "arch": arch.to_dict(), "data": data, "versions": _versions()}
        config_path.write_text(json.dumps(record, indent=2) + "\n")
        params = sum(p.numel() for p in trainer.generator.parameters())
        print(f"{len(pairs)} pairs; generator {params / 1e6:.2f}M parameters; {arch.frame_rate:g} units/s -> "
              f"{arch.sample_rate} Hz; discriminators: {config.gan}; from step {trainer.step} to {config.steps}")
        last = trainer.fit(pairs, progress=not args.no_progress, provenance={"training": record["training"]})
    except (VocoderTrainingError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    print(json.dumps({"step": trainer.step, "checkpoint": str(trainer.checkpoint_dir), **last}))
    return 0
