"""``diffuspeech bench vocoder``: real-time factor (compute seconds per audio second) of the vocoders.

Measures, on 10 s of 25 Hz units (250 units, 16 kHz output), batch 1:

- ``unit_hifigan`` with the ``base25hz`` preset (~14M parameters, random weights: speed
  does not depend on them), weight norm folded into the weights as at inference,
- the same generator with weight norm left in place (``*_weight_norm_rtf``: what folding saves),
- ``griffinlim`` on a 500-unit codebook (the in-run reference: ``unit_hifigan_vs_griffinlim``
  is the ratio of the two RTFs; < 1 means the neural vocoder is faster).

RTF < 1 is faster than real time. The median of ``--repeats`` timed runs is reported.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from diffuspeech.bench import device_name, median_seconds
from diffuspeech.compose import build_component
from diffuspeech.mel import MelConfig, log_mel


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length to synthesise (default 10)")
    parser.add_argument("--num-units", type=int, default=500, help="codebook size (default 500)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per vocoder (median reported)")
    parser.add_argument("--n-iter", type=int, default=64, help="Griffin-Lim iterations (default 64, the vocoder's default)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")


def _centroids_file(folder: Path, num_units: int) -> Path:
    """A mel_kmeans-format codebook whose centroids are log-mel frames of noise bursts."""
    mel = MelConfig()
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(num_units * mel.hop_length, generator=gen) * torch.rand(num_units, generator=gen).repeat_interleave(mel.hop_length)
    frames = log_mel(noise, mel)[:num_units]  # [K, n_mels]
    path = folder / "centroids.safetensors"
    meta = {"mel_config": mel.to_json(), "kind": "mel_kmeans", "num_units": str(num_units)}
    save_file({"centroids": frames.contiguous()}, str(path), metadata=meta)
    return path


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    frames = int(round(args.seconds * 25))
    units = torch.randint(0, args.num_units, (1, frames), generator=torch.Generator().manual_seed(0))
    audio_s = frames * 640 / 16000
    result: dict = {"device": device_name(device), "audio_s": audio_s, "frames": frames}

    hifigan = build_component("vocoders", {"name": "unit_hifigan", "preset": "base25hz", "num_units": args.num_units,
                                           "device": args.device})
    result["unit_hifigan_params"] = hifigan.num_parameters()
    t = median_seconds(lambda: hifigan.decode(units), args.repeats, sync)
    result["unit_hifigan_rtf"] = round(t / audio_s, 4)
    unfolded = build_component("vocoders", {"name": "unit_hifigan", "preset": "base25hz", "num_units": args.num_units,
                                            "remove_weight_norm": False, "device": args.device})
    t_wn = median_seconds(lambda: unfolded.decode(units), args.repeats, sync)
    result["unit_hifigan_weight_norm_rtf"] = round(t_wn / audio_s, 4)

    with tempfile.TemporaryDirectory() as tmp:
        path = _centroids_file(Path(tmp), args.num_units)
        gl = build_component("vocoders", {"name": "griffinlim", "path": str(path), "n_iter": args.n_iter,
                                          "device": args.device})
        t_gl = median_seconds(lambda: gl.decode(units), args.repeats, sync)
    result["griffinlim_n_iter"] = args.n_iter
    result["griffinlim_rtf"] = round(t_gl / audio_s, 4)
    result["unit_hifigan_vs_griffinlim"] = round(t / t_gl, 3)
    return result
