"""``diffuspeech convert-vocoder``: rewrite a speechbrain or CodeHiFiGAN checkpoint in the diffuspeech format.

    diffuspeech convert-vocoder path/to/codehifigan_folder out/vocoder
    diffuspeech convert-vocoder path/to/speechbrain_folder out/vocoder --format speechbrain

The output folder (``vocoder.json`` + ``generator.safetensors``) loads without pickles or
YAML: ``vocoder: {name: unit_hifigan, path: out/vocoder}``. Loading checks every weight,
and the converted generator is verified to produce the same audio as the source.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from diffuspeech.errors import ConfigError


def configure(p) -> None:
    p.add_argument("source", help="checkpoint folder or file")
    p.add_argument("out", help="output folder (created)")
    p.add_argument("--format", default="auto", choices=["auto", "speechbrain", "codehifigan", "diffuspeech"])
    p.add_argument("--checkpoint", default="", help="weights file name inside SOURCE when it holds several")
    p.set_defaults(func=run)


def run(args) -> int:
    from .formats import CheckpointError, load_unit_hifigan, save_diffuspeech

    out = Path(args.out)
    try:
        model, fmt = load_unit_hifigan(args.source, args.format, args.checkpoint)
        if out.exists() and any(out.iterdir()):
            raise CheckpointError(f"{out} exists and is not empty; choose a new output folder")
        save_diffuspeech(model, out, extra={"converted_from": {"path": str(Path(args.source).resolve()), "format": fmt}})
        converted, _ = load_unit_hifigan(out, "diffuspeech")
    except CheckpointError as exc:
        raise ConfigError(str(exc)) from None
    arch = model.arch
    units = torch.arange(max(8, arch.min_frames)) % arch.num_units  # [T]
    lengths = torch.tensor([units.numel()])
    with torch.no_grad():
        a, _ = model.synthesize(units[None], lengths)
        b, _ = converted.synthesize(units[None], lengths)
    if not torch.allclose(a, b, atol=1e-6):
        raise ConfigError(f"{out}: the converted generator does not reproduce the source (max diff {(a - b).abs().max():.2e})")
    print(json.dumps({"out": str(out), "from_format": fmt, "num_units": arch.num_units,
                      "sample_rate": arch.sample_rate, "hop_length": arch.hop_length}))
    return 0
