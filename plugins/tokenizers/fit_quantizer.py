"""``diffuspeech fit-quantizer DATA --out centroids.safetensors``: k-means on tokenizer features.

DATA is a folder of audio files or a JSONL manifest (``id``, ``audio``). Features come from
the tokenizer config (default: ``mel_kmeans``, log-mel at 25 Hz); its quantizer setting is
ignored while fitting. Writes the centroids (safetensors, with the tokenizer's metadata) and,
beside them with the suffix ``.yaml`` (``units/mel16.safetensors`` -> ``units/mel16.yaml``), a
tokenizer config that uses them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from diffuspeech.commands.arguments import allow_intermixed
from diffuspeech.commands.audio_inputs import audio_entries, build_tokenizer, load_batches, pad_batch, tokenizer_node
from diffuspeech.errors import ConfigError
from diffuspeech.kmeans import fit_kmeans
from diffuspeech.registry import RegistryError, get_registry

DEFAULT_TOKENIZER = {"name": "mel_kmeans"}


DESCRIPTION = __doc__.split("\n\n", 1)[1]


def configure(p) -> None:
    p.description = DESCRIPTION  # the module's usage notes
    p.add_argument("data", help="folder of audio files, or JSONL manifest with 'id' and 'audio'")
    p.add_argument("--out", required=True, help="centroids file to write (.safetensors)")
    p.add_argument("--tokenizer-config", help="YAML with a 'tokenizer:' section (default: mel_kmeans)")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. tokenizer.layer=9")
    p.add_argument("--num-units", type=int, default=500, help="number of centroids K (default 500)")
    p.add_argument("--iters", type=int, default=100, help="maximum Lloyd iterations (default 100)")
    p.add_argument("--tol", type=float, default=1e-4, help="stop when inertia improves less than this (relative)")
    p.add_argument("--max-frames", type=int, default=200_000, help="frames kept for fitting (uniform sample; default 200000)")
    p.add_argument("--normalize", action="store_true", help="cluster standardised features (centroids are stored unscaled)")
    p.add_argument("--seed", type=int, default=0, help="random seed (frame sampling and k-means++)")
    p.add_argument("--batch-size", type=int, default=8, help="utterances per feature batch (default 8)")
    p.add_argument("--device", help="where k-means runs (default: the tokenizer's device)")
    p.set_defaults(func=run)
    allow_intermixed(p)


class Reservoir:
    """A uniform random sample of at most ``capacity`` rows from a stream of ``[n, D]`` blocks."""

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity = capacity
        self.seen = 0
        self.rows: torch.Tensor | None = None  # [<=capacity, D]
        self.generator = torch.Generator().manual_seed(seed)

    def add(self, block: torch.Tensor) -> None:
        block = block.detach().float().cpu()
        if self.rows is None:
            self.rows = torch.empty(0, block.shape[1])
        room = self.capacity - self.rows.shape[0]
        if room > 0:
            self.rows = torch.cat([self.rows, block[:room]], 0)
            self.seen += min(room, block.shape[0])
            block = block[room:]
        if block.shape[0] == 0:
            return
        # Algorithm R, vectorised: row number i (0-based) replaces a random slot with prob capacity/(i+1)
        index = torch.arange(self.seen, self.seen + block.shape[0], dtype=torch.float64)
        slot = (torch.rand(block.shape[0], generator=self.generator, dtype=torch.float64) * (index + 1)).long()
        keep = slot < self.capacity
        self.rows[slot[keep]] = block[keep]
        self.seen += block.shape[0]


def run(args) -> int:
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out {out}: the centroids file must end in .safetensors")
    if args.num_units < 1 or args.max_frames < args.num_units:
        raise ConfigError(f"need 1 <= --num-units ({args.num_units}) <= --max-frames ({args.max_frames})")
    entries = audio_entries(args.data)
    node = tokenizer_node(args.tokenizer_config, args.overrides, DEFAULT_TOKENIZER)
    key = _quantizer_key(node)
    tokenizer = build_tokenizer({**node, key: None} if key else node)
    if not hasattr(tokenizer, "features") or not hasattr(tokenizer, "centroids_metadata"):
        raise ConfigError(f"tokenizer.name: {node['name']!r} does not expose features to fit a quantizer on")

    reservoir = Reservoir(args.max_frames, args.seed)
    failed: list[str] = []
    audio_s = 0.0
    start = time.perf_counter()
    bar = tqdm(total=len(entries), desc="features", unit="file")
    for batch in load_batches(entries, tokenizer.sample_rate, args.batch_size):
        waves = []
        for entry, wav, error in batch:
            if wav is None:
                failed.append(error or str(entry.audio))
            else:
                waves.append(wav)
                audio_s += wav.numel() / tokenizer.sample_rate
        if waves:
            feats, lengths = tokenizer.features(*pad_batch(waves))  # [B, T, D], [B]
            for i, n in enumerate(lengths.tolist()):
                reservoir.add(feats[i, :n])
        bar.update(len(batch))
        bar.set_postfix(frames=reservoir.seen)
    bar.close()
    for msg in failed:
        print(f"skipped: {msg}", file=sys.stderr)
    if reservoir.rows is None or reservoir.rows.shape[0] < args.num_units:
        have = 0 if reservoir.rows is None else reservoir.rows.shape[0]
        raise ConfigError(f"{args.data}: only {have} feature frames for {args.num_units} units; give more audio or lower --num-units")

    device = torch.device(args.device) if args.device else getattr(tokenizer, "device", torch.device("cpu"))
    x = reservoir.rows.to(device)  # [N, D]
    mean = std = None
    if args.normalize:
        mean, std = x.mean(0), x.std(0).clamp_min(1e-5)  # [D]
        x = (x - mean) / std
    result = fit_kmeans(x, args.num_units, iters=args.iters, tol=args.tol, seed=args.seed, progress="k-means")
    centroids = result.centroids if mean is None else result.centroids * std + mean  # raw feature space
    elapsed = time.perf_counter() - start

    from diffuspeech.quantizers import save_centroids  # noqa: PLC0415 - plugin module

    metadata = dict(tokenizer.centroids_metadata())
    metadata.update(
        {
            "tokenizer_config": json.dumps(node, sort_keys=True),
            "fit": json.dumps(
                {"frames": int(x.shape[0]), "frames_seen": reservoir.seen, "audio_s": round(audio_s, 2),
                 "inertia": result.inertia, "iterations": result.iterations, "seed": args.seed,
                 "normalized": bool(args.normalize)}
            ),
        }
    )
    extra = None if mean is None else {"feature_mean": mean, "feature_std": std}
    save_centroids(out, centroids, tokenizer.centroids_kind, metadata, extra)
    yaml_path = out.with_suffix(".yaml")
    config = {"tokenizer": {**node, key or "path": str(out.resolve())}}
    yaml_path.write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    empty = int((result.counts == 0).sum())
    print(
        f"fitted {args.num_units} centroids on {x.shape[0]} frames ({audio_s:.1f} s of audio) in {elapsed:.1f} s, "
        f"{result.iterations} iterations, inertia/frame {result.inertia / x.shape[0]:.4g}"
        + (f", {empty} empty clusters" if empty else "")
        + f"\nwrote {out} and {yaml_path}",
        file=sys.stderr,
    )
    return 0


def _quantizer_key(node: dict) -> str | None:
    """The tokenizer's setting that names its quantizer file (None if it has none)."""
    try:
        cls = get_registry().get("tokenizers", str(node.get("name")))
    except RegistryError:
        build_tokenizer(node)  # raises the ConfigError that names the valid tokenizers
        raise
    key = getattr(cls, "quantizer_key", None)
    return key if key in cls.settings_fields() else None
