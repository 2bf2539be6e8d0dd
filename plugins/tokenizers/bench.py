"""Tokenizer speed: real-time factor (processing seconds per audio second; lower is faster).

* ``hubert``: a HuBERT-base-size model (12 layers, 768 dims, 50 Hz, random weights built
  from ``HubertConfig``) at layer 11, pairs of frames averaged to 25 Hz, nearest of 500
  centroids; on 10 s of audio: one 10 s utterance, and 5 x 2 s utterances encoded one by
  one (unbatched) and in one call (batched).
* ``mel_kmeans``: log-mel at 25 Hz + 500 centroids on the same audio.

The model and centroids are written to a temporary folder and loaded the way users load
theirs, so the figures include the tokenizer's own batching, chunking and masking.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from diffuspeech.bench import device_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per measurement (default 10)")
    parser.add_argument("--pieces", type=int, default=5, help="utterances the audio is cut into for batching (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported (default 3)")
    parser.add_argument("--units", type=int, default=500, help="number of centroids (default 500)")
    parser.add_argument("--layer", type=int, default=11, help="HuBERT layer (default 11)")


def _best_time(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()  # warm-up (allocations, kernel selection)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


def run(args: argparse.Namespace) -> dict:
    from transformers import HubertConfig, HubertModel  # noqa: PLC0415 - slow import, only here

    from diffuspeech.mel import MelConfig  # noqa: PLC0415
    from diffuspeech.quantizers import save_centroids  # noqa: PLC0415

    from .hubert import HubertTokenizer  # noqa: PLC0415
    from .mel_kmeans import MelKMeansTokenizer  # noqa: PLC0415

    device = torch.device(args.device)
    torch.manual_seed(0)
    sr = 16000
    total = int(args.seconds * sr)
    audio = 0.1 * torch.randn(total)  # content does not change the cost
    piece = total // args.pieces
    batch = audio[: piece * args.pieces].reshape(args.pieces, piece)  # [P, S/P]

    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        folder = Path(tmp) / "hubert-base"
        HubertModel(HubertConfig()).save_pretrained(folder)  # HubertConfig() defaults are HuBERT-base
        save_centroids(Path(tmp) / "km.safetensors", torch.randn(args.units, 768), "kmeans")
        hubert = HubertTokenizer(
            HubertTokenizer.Config(
                model_path=str(folder), layer=args.layer, quantizer=str(Path(tmp) / "km.safetensors"), device=args.device
            )
        )
        mel_cfg = MelConfig()
        save_centroids(
            Path(tmp) / "mel.safetensors", torch.randn(args.units, mel_cfg.n_mels), "mel_kmeans",
            {"mel_config": mel_cfg.to_json()},
        )
        mel = MelKMeansTokenizer(MelKMeansTokenizer.Config(path=str(Path(tmp) / "mel.safetensors"), device=args.device))

        seconds = total / sr
        result: dict = {
            "device": device_name(device),
            "audio_s": seconds,
            "pieces": args.pieces,
            "units": args.units,
            "hubert_layer": args.layer,
            "hubert_frame_rate": hubert.frame_rate,
        }
        for name, tok in (("hubert", hubert), ("mel_kmeans", mel)):
            t_long = _best_time(lambda t=tok: t.encode(audio[None]), args.repeats, device)
            t_unbatched = _best_time(lambda t=tok: [t.encode(row[None]) for row in batch], args.repeats, device)
            t_batched = _best_time(lambda t=tok: t.encode(batch), args.repeats, device)
            result[f"{name}_rtf_single_10s"] = round(t_long / seconds, 5)
            result[f"{name}_rtf_unbatched"] = round(t_unbatched / seconds, 5)
            result[f"{name}_rtf_batched"] = round(t_batched / seconds, 5)
            result[f"{name}_batched_speedup"] = round(t_unbatched / t_batched, 3)
    return result
