"""Helpers shared by ``tokenize`` and ``fit-quantizer``: manifests, tokenizer configs, batches."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..audio import AudioError, find_audio_files, load_audio
from ..compose import ConfigError, build_component, load_config
from ..manifest import BadRow, ManifestError, read_manifest


@dataclass(frozen=True)
class AudioEntry:
    id: str
    audio: Path  # resolved path


def read_audio_manifest(path: str | Path) -> list[AudioEntry]:
    """JSONL with at least ``id`` and ``audio`` per line (:func:`diffuspeech.manifest.read_manifest`);
    relative audio paths are resolved against the manifest's folder. Raises ConfigError naming the line."""
    p = Path(path)
    entries: list[AudioEntry] = []
    seen: dict[str, int] = {}
    try:
        rows = list(read_manifest(p))
    except ManifestError as exc:
        raise ConfigError(str(exc)) from None
    for lineno, obj in rows:
        if isinstance(obj, BadRow):
            raise ConfigError(f"{p}:{lineno}: {obj}")
        if "id" not in obj or "audio" not in obj:
            raise ConfigError(f"{p}:{lineno}: each line needs the keys 'id' and 'audio', got {json.dumps(obj)[:120]!r}")
        utt_id = str(obj["id"])
        if utt_id in seen:
            raise ConfigError(f"{p}:{lineno}: duplicate id {utt_id!r} (first on line {seen[utt_id]})")
        seen[utt_id] = lineno
        audio = Path(str(obj["audio"]))
        entries.append(AudioEntry(utt_id, audio if audio.is_absolute() else p.parent / audio))
    return entries


def audio_entries(source: str | Path) -> list[AudioEntry]:
    """A JSONL manifest, or every audio file under a folder (id = path relative to it)."""
    p = Path(source)
    if p.is_dir():
        files = find_audio_files(p)
        if not files:
            raise ConfigError(f"{p}: no audio files found (looked for .wav, .flac, .ogg, ...)")
        return [AudioEntry(str(f.relative_to(p).with_suffix("")), f) for f in files]
    return read_audio_manifest(p)


def tokenizer_node(config_file: str | None, overrides: Sequence[str], default: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``tokenizer`` node from a YAML file (a full config with a ``tokenizer:`` section, or
    the node itself) with dotlist ``overrides`` written ``tokenizer.key=value``."""
    for item in overrides:
        if not item.startswith("tokenizer."):
            raise ConfigError(f"override {item!r} must start with 'tokenizer.' (e.g. tokenizer.path=centroids.safetensors)")
    if config_file:
        cfg = load_config(config_file)
        if "tokenizer" not in cfg:
            if "name" not in cfg:
                raise ConfigError(f"{config_file}: needs a 'tokenizer:' section or a tokenizer node with 'name'")
            cfg = OmegaConf.create({"tokenizer": cfg})
    else:
        cfg = OmegaConf.create({"tokenizer": dict(default or {})})
    cfg = load_config(cfg, overrides)
    node = cfg.tokenizer
    if isinstance(node, str):
        return {"name": node}
    if not isinstance(node, DictConfig):
        raise ConfigError(f"tokenizer: expected a mapping like {{name: ..., ...settings}}, got {node!r}")
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def build_tokenizer(node: dict[str, Any]):
    return build_component("tokenizers", node, "tokenizer")


def load_batches(
    entries: Iterable[AudioEntry], sample_rate: int, batch_size: int, workers: int = 2
) -> Iterator[list[tuple[AudioEntry, torch.Tensor | None, str | None]]]:
    """Read audio in background threads; yield lists of ``(entry, waveform or None, error or None)``.

    At most ``4 * batch_size`` files are read ahead, so memory stays bounded on big corpora.
    """

    def read(entry: AudioEntry) -> tuple[AudioEntry, torch.Tensor | None, str | None]:
        try:
            return entry, load_audio(entry.audio, sample_rate), None
        except AudioError as exc:
            return entry, None, str(exc)

    it = iter(entries)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        queue: list[Future] = []
        batch: list[tuple[AudioEntry, torch.Tensor | None, str | None]] = []
        exhausted = False
        while True:
            while not exhausted and len(queue) < 4 * batch_size:
                try:
                    queue.append(pool.submit(read, next(it)))
                except StopIteration:
                    exhausted = True
            if not queue:
                break
            batch.append(queue.pop(0).result())
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def pad_batch(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[S_i]`` list -> (``[B, S_max]`` zero-padded, lengths ``[B]``)."""
    lengths = torch.tensor([w.numel() for w in waves], dtype=torch.long)
    return torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), lengths
