"""On-disk store of speech units: safetensors shards plus a JSONL index.

Layout of a store folder (written by ``diffuspeech tokenize``)::

    meta.json                   tokenizer config, sample_rate, frame_rate, num_units
    index.jsonl                 {"id", "shard", "num_units", "duration_s"} per utterance
    units-00000.safetensors     one int tensor [T] per utterance id (+ "durations/<id>" when deduplicated)
    failed.jsonl                inputs that could not be tokenized, with the reason

A shard is written to a temporary file and renamed, then its index lines are appended:
an interrupted run leaves only complete shards, and the ids already in the index are
skipped when it is resumed. Read it back with :class:`UnitStore`::

    store = UnitStore("units/")
    units = store["utt1"]  # LongTensor [T]
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from .atomic import save_tensors
from .errors import UserError

__all__ = ["UnitRecord", "UnitStore", "UnitStoreError", "UnitStoreWriter"]

INDEX_FILE = "index.jsonl"
META_FILE = "meta.json"
FAILED_FILE = "failed.jsonl"
SHARD_FORMAT = "units-{:05d}.safetensors"
SHARD_RE = re.compile(r"^units-(\d{5,})\.safetensors$")
DURATIONS_PREFIX = "durations/"


class UnitStoreError(UserError):
    """A unit store folder that is missing, inconsistent or used with another tokenizer."""


@dataclass(frozen=True)
class UnitRecord:
    id: str
    shard: str  # shard file name inside the store folder
    num_units: int
    duration_s: float  # audio duration in seconds


def _read_index(path: Path, repair: bool = False) -> list[UnitRecord]:
    """Records of ``index.jsonl``. A torn last line (no newline: the writer was killed) is
    ignored, and cut off when ``repair`` (the writer appends after it)."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if repair and len(complete) != len(data):
        with open(path, "r+b") as f:
            f.truncate(len(complete))
    records = []
    for lineno, line in enumerate(complete.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            records.append(UnitRecord(str(obj["id"]), str(obj["shard"]), int(obj["num_units"]), float(obj["duration_s"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise UnitStoreError(f"{path}:{lineno}: malformed index line ({exc}): {line[:120]!r}") from None
    return records


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


class UnitStoreWriter:
    """Appends utterances to a store folder in shards of ``shard_size`` utterances.

    ``meta`` describes the tokenizer; reopening a folder whose ``meta.json`` differs in any
    key listed in ``match_keys`` raises :class:`UnitStoreError` (units from two tokenizers
    must not mix). Use as a context manager, or call :meth:`flush` at the end.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        meta: dict[str, Any],
        shard_size: int = 1000,
        match_keys: tuple[str, ...] = ("tokenizer", "num_units", "frame_rate", "sample_rate"),
    ) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        meta_path = self.directory / META_FILE
        if meta_path.is_file():
            old = json.loads(meta_path.read_text())
            for key in match_keys:
                if old.get(key) != meta.get(key):
                    raise UnitStoreError(
                        f"{self.directory} already holds units with a different {key} "
                        f"({old.get(key)!r} vs {meta.get(key)!r}); write to a new --out folder or delete this one"
                    )
        else:
            _write_json_atomic(meta_path, meta)
        self.meta = meta
        records = _read_index(self.directory / INDEX_FILE, repair=True)
        self.done: set[str] = {r.id for r in records}
        numbers = [int(m.group(1)) for p in self.directory.iterdir() if (m := SHARD_RE.match(p.name))]
        numbers += [int(m.group(1)) for r in records if (m := SHARD_RE.match(r.shard))]
        self._next_shard = max(numbers, default=-1) + 1
        self._pending: dict[str, tuple[torch.Tensor, float, torch.Tensor | None]] = {}
        for stale in self.directory.glob(".units-*.tmp"):  # shards a killed writer never renamed
            stale.unlink(missing_ok=True)
        # failures are retried by every run, so the list describes the latest run only
        (self.directory / FAILED_FILE).unlink(missing_ok=True)
        self.num_units = int(meta.get("num_units") or 0)

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self.done or utt_id in self._pending

    def __enter__(self) -> UnitStoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()

    def add(self, utt_id: str, units: torch.Tensor, duration_s: float, durations: torch.Tensor | None = None) -> None:
        """Queue one utterance (``units [T]``); writes a shard when ``shard_size`` are queued."""
        if not isinstance(utt_id, str) or not utt_id:
            raise UnitStoreError(f"utterance id must be a non-empty string, got {utt_id!r}")
        if utt_id.startswith(DURATIONS_PREFIX):
            raise UnitStoreError(f"utterance id {utt_id!r} must not start with {DURATIONS_PREFIX!r}")
        if utt_id in self:
            raise UnitStoreError(f"utterance id {utt_id!r} is already in {self.directory}")
        if units.dim() != 1:
            raise UnitStoreError(f"{utt_id}: units must have shape [T], got {tuple(units.shape)}")
        self._pending[utt_id] = (units.detach().cpu(), float(duration_s), None if durations is None else durations.detach().cpu())
        if len(self._pending) >= self.shard_size:
            self.flush()

    def _dtype(self, tensors: list[torch.Tensor]) -> torch.dtype:
        top = max([self.num_units - 1] + [int(t.max()) for t in tensors if t.numel()])
        return torch.int16 if top < 2**15 else torch.int32

    def flush(self) -> None:
        """Write queued utterances as one shard (atomic rename), then append their index lines."""
        if not self._pending:
            return
        name = SHARD_FORMAT.format(self._next_shard)
        self._next_shard += 1
        dtype = self._dtype([u for u, _, _ in self._pending.values()])
        tensors: dict[str, torch.Tensor] = {}
        for utt_id, (units, _, durations) in self._pending.items():
            tensors[utt_id] = units.to(dtype).contiguous()
            if durations is not None:
                tensors[DURATIONS_PREFIX + utt_id] = durations.to(torch.int32).contiguous()
        path = self.directory / name
        tmp = self.directory / f".{name}.tmp"
        save_tensors(tensors, str(tmp), metadata={"format": "diffuspeech-units"})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        lines = "".join(
            json.dumps(asdict(UnitRecord(i, name, int(u.numel()), round(d, 4)))) + "\n"
            for i, (u, d, _) in self._pending.items()
        )
        with open(self.directory / INDEX_FILE, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
        self.done.update(self._pending)
        self._pending.clear()

    def record_failure(self, utt_id: str, source: str, error: str) -> None:
        """Append an input that could not be tokenized to ``failed.jsonl``."""
        with open(self.directory / FAILED_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps({"id": utt_id, "audio": source, "error": error}) + "\n")


class UnitStore:
    """Read-only view of a unit store folder: ``store[id] -> LongTensor [T]``."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise UnitStoreError(f"{self.directory}: unit store folder not found (create it with `diffuspeech tokenize`)")
        index = self.directory / INDEX_FILE
        if not index.is_file():
            raise UnitStoreError(f"{self.directory}: no {INDEX_FILE}; not a unit store (create it with `diffuspeech tokenize`)")
        meta = self.directory / META_FILE
        self.meta: dict[str, Any] = json.loads(meta.read_text()) if meta.is_file() else {}
        self._records: dict[str, UnitRecord] = {r.id: r for r in _read_index(index)}
        self._handles: dict[str, tuple[Any, set[str]]] = {}  # shard name -> (open file, its keys)

    def ids(self) -> list[str]:
        return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._records

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def record(self, utt_id: str) -> UnitRecord:
        try:
            return self._records[utt_id]
        except KeyError:
            raise KeyError(f"utterance {utt_id!r} is not in the unit store {self.directory}") from None

    def _shard(self, name: str) -> tuple[Any, set[str]]:
        entry = self._handles.get(name)
        if entry is None:
            path = self.directory / name
            if not path.is_file():
                raise UnitStoreError(f"{path}: shard listed in {INDEX_FILE} is missing")
            handle = safe_open(str(path), framework="pt")  # memory-mapped; tensors are read on demand
            entry = self._handles[name] = (handle, set(handle.keys()))
        return entry

    def __getitem__(self, utt_id: str) -> torch.Tensor:
        rec = self.record(utt_id)
        handle, keys = self._shard(rec.shard)
        if utt_id not in keys:
            raise UnitStoreError(f"{self.directory / rec.shard}: has no units for {utt_id!r} listed in {INDEX_FILE}")
        return handle.get_tensor(utt_id).long()  # [T]

    def durations(self, utt_id: str) -> torch.Tensor | None:
        """Frames per unit ``[T]`` when the units were deduplicated, else None."""
        handle, keys = self._shard(self.record(utt_id).shard)
        key = DURATIONS_PREFIX + utt_id
        return handle.get_tensor(key).long() if key in keys else None

    def total_duration_s(self) -> float:
        return sum(r.duration_s for r in self._records.values())
