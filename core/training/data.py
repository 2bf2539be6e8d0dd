"""Training data: a JSONL manifest -> validated, laid-out examples per task.

One manifest row is one JSON object. It may serve several tasks: an arithmetic row with a
spoken question, a thinking trace and a spoken answer feeds S2S, S2T and T2T, ASR on the
question and TTS on the answer. Which manifest key fills which segment field of a task is
config (``data.fields``); by default a segment field reads the manifest key of the same name::

    {"id": "q17", "split": "train", "tasks": ["s2s", "asr"],
     "question_text": "what is two plus three", "thinking": "2 + 3 = 5", "answer_text": "5",
     "question_speech": {"units": "q17-question"},        # unit-store id (data.unit_store)
     "answer_speech": [4, 4, 17, 230]}                    # inline units

    data:
      fields:
        asr: {speech: question_speech, text: question_text}
        tts: {text: answer_text, speech: answer_speech}

Speech fields take inline units (a list, or ``{"units": [...]}``), a unit-store reference
``{"units": "<id>"}`` (the folder ``diffuspeech tokenize`` writes, set as ``data.unit_store``)
or ``{"audio": "clip.wav"}``, encoded once at load time with the config's ``tokenizer``.
A row lists the tasks it serves in ``task`` (one name) or ``tasks`` (a list); without either
it serves every task whose fields it has.

Bad rows (unreadable JSON, unknown task, missing or empty field, missing audio file or unit
id, units out of range, a sequence over ``data.max_length``) stop loading with a message
naming the file, line and row id (``data.on_bad_row: error``), or are dropped, counted per
reason and reported (``skip``); never silently.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from ..compose import SECTION_SCHEMAS, ConfigError, checked_section
from ..errors import UserError
from ..formats import Sequence, TaskSpec, layout
from ..manifest import BadRow, read_manifest
from ..modality import SPEECH_FEATURES, TEXT
from ..vocab import Vocab

log = logging.getLogger("diffuspeech.training.data")

BAD_ROW_CHOICES = ("error", "skip")


@dataclass
class DataConfig:
    manifest: Optional[str] = None  # JSONL training manifest; a relative path is read against the config file's folder
    dev_manifest: Optional[str] = None  # JSONL dev manifest; None = rows of `manifest` whose split is `dev_split`
    train_split: str = "train"  # rows of `manifest` used for training (rows without "split" count as train)
    dev_split: str = "dev"  # rows of `manifest` used for dev evaluation when dev_manifest is None
    unit_store: Optional[str] = None  # folder written by `diffuspeech tokenize`; {"units": "<id>"} is looked up there
    audio_root: Optional[str] = None  # base of relative {"audio": path} fields; None = the manifest's folder
    fields: Any = None  # task -> {segment field: manifest key}; a field not listed reads the key of its own name
    max_length: Optional[int] = None  # longest laid-out sequence (tokens); None = the backbone's max_seq_len
    on_bad_row: str = "error"  # "error": stop, naming the row | "skip": drop the row, count and report it
    batch_size: int = 8  # sequences per optimizer step over all processes (split over processes x train.grad_accum)
    bucket_batches: int = 32  # batches drawn together and sorted by length (more = less padding, coarser shuffling)
    dev_batch_size: int = 16  # sequences per dev batch
    dev_max_examples: Optional[int] = None  # first N dev examples per task (None = all)


class DataError(UserError):
    """A manifest problem; the message names the file, line, row id and the fix."""


@dataclass
class BadRowReport:
    """Counts of dropped (row, task) examples per reason, and the first few messages."""

    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    total: int = 0  # (row, task) pairs looked at

    def add(self, reason: str, message: str) -> None:
        self.counts[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(message)

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def summary(self, what: str) -> str:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items()))
        first = "\n  ".join(self.examples)
        return f"{what}: skipped {self.skipped} of {self.total} examples ({reasons}); first ones:\n  {first}"


def check_data_config(cfg: DataConfig) -> None:
    if cfg.on_bad_row not in BAD_ROW_CHOICES:
        raise ConfigError(f"data.on_bad_row: {cfg.on_bad_row!r}; valid: {', '.join(BAD_ROW_CHOICES)}")
    fields = cfg.fields or {}
    if not isinstance(fields, dict) or not all(
        isinstance(m, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in m.items()) for m in fields.values()
    ):
        raise ConfigError(f"data.fields: expected {{task: {{segment field: manifest key}}}}, got {fields!r}")
    for key in ("batch_size", "bucket_batches", "dev_batch_size"):
        if int(getattr(cfg, key)) <= 0:
            raise ConfigError(f"data.{key}: expected a positive integer, got {getattr(cfg, key)}")
    if cfg.max_length is not None and cfg.max_length <= 0:
        raise ConfigError(f"data.max_length: expected a positive length (or null: the backbone's), got {cfg.max_length}")


validate_data_section = checked_section(DataConfig, check_data_config, "data")
SECTION_SCHEMAS["data"] = validate_data_section


# ---------------------------------------------------------------------------- manifest


def row_tasks(row: dict, tasks: dict[str, TaskSpec], fields: dict[str, dict[str, str]]) -> list[str]:
    """The tasks a row serves: ``task``/``tasks`` when given, else every task whose fields it has."""
    declared = row.get("tasks", row.get("task"))
    if declared is None:
        return [name for name, spec in tasks.items() if all(row.get(_key(fields, name, s.field)) is not None for s in spec.segments)]
    names = [declared] if isinstance(declared, str) else declared
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRow("bad_value", f"'task'/'tasks' must be a task name or a list of names, got {declared!r}")
    unknown = [n for n in names if n not in tasks]
    if unknown:
        raise BadRow("unknown_task", f"unknown task(s) {unknown}; configured tasks: {', '.join(tasks)}")
    return names


def _key(fields: dict[str, dict[str, str]], task: str, seg_field: str) -> str:
    return fields.get(task, {}).get(seg_field, seg_field)


# ---------------------------------------------------------------------------- speech values


class SpeechResolver:
    """Turns a manifest speech value into a unit tensor ``[frames]`` in [0, K)."""

    def __init__(
        self,
        unit_store: Any = None,  # object with __getitem__(id) -> LongTensor (diffuspeech.unit_store.UnitStore)
        encode_audio: Optional[Callable[[Path], torch.Tensor]] = None,  # path -> units, or None (no tokenizer)
        audio_root: Optional[Path] = None,
    ) -> None:
        self.unit_store, self.encode_audio, self.audio_root = unit_store, encode_audio, audio_root
        self._audio_cache: dict[str, torch.Tensor] = {}

    def __call__(self, value: Any, key: str) -> torch.Tensor:
        if isinstance(value, dict):
            if "units" in value:
                value = value["units"]
                if isinstance(value, str):
                    return self._from_store(value, key)
            elif "audio" in value:
                return self._from_audio(str(value["audio"]), key)
            else:
                raise BadRow("bad_value", f"speech field {key!r}: expected {{'units': ...}} or {{'audio': path}}, got keys {sorted(value)}")
        if isinstance(value, str):
            raise BadRow(
                "bad_value",
                f"speech field {key!r}: a bare string {value!r}; write {{'units': {value!r}}} for a unit-store id or {{'audio': {value!r}}} for a file",
            )
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise BadRow("bad_value", f"speech field {key!r}: expected a list of integer units")
        return torch.tensor(value, dtype=torch.long)

    def _from_store(self, uid: str, key: str) -> torch.Tensor:
        if self.unit_store is None:
            raise BadRow("missing_units", f"speech field {key!r} refers to unit-store id {uid!r} but data.unit_store is not set")
        try:
            units = self.unit_store[uid]
        except KeyError:
            raise BadRow("missing_units", f"speech field {key!r}: unit-store id {uid!r} not found in data.unit_store") from None
        except ValueError as exc:  # UnitStoreError: a shard listed in the index is missing or incomplete
            raise BadRow("missing_units", f"speech field {key!r}: unit-store id {uid!r}: {exc}") from None
        return torch.as_tensor(units, dtype=torch.long).reshape(-1)

    def _from_audio(self, rel: str, key: str) -> torch.Tensor:
        path = Path(rel)
        if not path.is_absolute() and self.audio_root is not None:
            path = self.audio_root / path
        if not path.is_file():
            raise BadRow("missing_audio", f"speech field {key!r}: audio file not found: {path}")
        if self.encode_audio is None:
            raise BadRow(
                "missing_audio",
                f"speech field {key!r}: {path} is audio but the config has no `tokenizer` section to encode it "
                "(or run `diffuspeech tokenize` and use unit references)",
            )
        cached = self._audio_cache.get(str(path))
        if cached is None:
            try:
                cached = self.encode_audio(path)
            except ValueError as exc:  # AudioError and friends
                raise BadRow("bad_audio", f"speech field {key!r}: {exc}") from None
            self._audio_cache[str(path)] = cached
        return cached


class FeatureAudio:
    """Reads the audio of a ``speech_features`` field (``{"audio": path}`` or a path string) at the
    encoder's rate, checks it against the encoder's window, and knows the canvas slots it takes."""

    def __init__(self, frontend: Any, audio_root: Optional[Path] = None) -> None:
        self.frontend, self.audio_root = frontend, audio_root

    def slots(self, num_samples: int) -> int:
        return self.frontend.slots(num_samples)

    def __call__(self, value: Any, key: str) -> torch.Tensor:
        from ..audio import load_audio
        from ..encoder import EncoderInputError

        rel = value.get("audio") if isinstance(value, dict) else value
        if not isinstance(rel, str) or not rel:
            raise BadRow("bad_value", f"speech_features field {key!r}: expected an audio path or {{'audio': path}}, got {value!r}")
        path = Path(rel)
        if not path.is_absolute() and self.audio_root is not None:
            path = self.audio_root / path
        if not path.is_file():
            raise BadRow("missing_audio", f"speech_features field {key!r}: audio file not found: {path}")
        try:
            wav = load_audio(path, sample_rate=self.frontend.sample_rate)  # [samples]
            self.frontend.check_audio(wav.numel(), f"speech_features field {key!r} ({path})")
        except EncoderInputError as exc:
            raise BadRow("too_long" if "window" in str(exc) else "bad_audio", str(exc)) from None
        except ValueError as exc:  # AudioError and friends
            raise BadRow("bad_audio", f"speech_features field {key!r}: {exc}") from None
        return wav.to(torch.float16)  # half the memory; the encoder reads float32


# ---------------------------------------------------------------------------- examples


@dataclass
class Example:
    task: str
    row_id: str
    seq: Sequence

    def __len__(self) -> int:
        return len(self.seq.ids)


def make_example(
    row: dict, task: str, spec: TaskSpec, vocab: Vocab, speech: SpeechResolver, fields: dict[str, dict[str, str]], max_length: int,
    features: Optional[FeatureAudio] = None,
) -> Example:
    """Validate ``row`` for ``task`` and lay it out; raises BadRow."""
    values: dict[str, Any] = {}
    for seg in spec.segments:
        key = _key(fields, task, seg.field)
        value = row.get(key)
        if value is None:
            raise BadRow("missing_field", f"task {task!r} needs field {key!r} (segment {seg.field!r}) and the row has none")
        if seg.modality == TEXT:
            if not isinstance(value, str):
                raise BadRow("bad_value", f"text field {key!r}: expected a string, got {type(value).__name__}")
            if not value.strip():
                raise BadRow("empty_text", f"text field {key!r} is empty")
            values[seg.field] = value
        elif seg.modality == SPEECH_FEATURES:
            if features is None:
                raise BadRow("bad_value", f"task {task!r}: field {key!r} is speech_features but the model has no encoder/adapters")
            values[seg.field] = features(value, key)
        else:
            units = speech(value, key)
            if units.numel() == 0:
                raise BadRow("missing_units", f"speech field {key!r} has no units")
            if int(units.min()) < 0 or int(units.max()) >= vocab.num_units:
                raise BadRow(
                    "units_out_of_range",
                    f"speech field {key!r}: units span [{int(units.min())}, {int(units.max())}], outside [0, {vocab.num_units}) "
                    f"(vocab.num_units); was it tokenized with another codebook?",
                )
            values[seg.field] = units
    try:
        seq = layout(task, spec, values, vocab, feature_slots=features.slots if features is not None else None)
    except ValueError as exc:
        raise BadRow("too_long" if "max_len" in str(exc) else "bad_value", str(exc)) from None
    if len(seq.ids) > max_length:
        raise BadRow("too_long", f"task {task!r}: the sequence has {len(seq.ids)} tokens, over data.max_length={max_length}")
    return Example(task=task, row_id=str(row.get("id", "?")), seq=seq)


@dataclass
class ExampleSet:
    """Laid-out examples per task, and what was dropped."""

    by_task: dict[str, list[Example]]
    report: BadRowReport

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.by_task.items()}


def load_examples(
    manifest: str | Path,
    tasks: dict[str, TaskSpec],
    vocab: Vocab,
    speech: SpeechResolver,
    config: DataConfig,
    max_length: int,
    split: Optional[str] = None,  # keep rows whose "split" equals this (rows without one count as `default_split`)
    default_split: Optional[str] = None,
    only_tasks: Optional[set[str]] = None,  # lay out only these tasks
    progress: bool = False,  # a tqdm bar over the manifest's rows (audio fields are encoded here)
    features: Optional[FeatureAudio] = None,  # speech_features fields: the model's encoder + adapters (FeatureAudio)
) -> ExampleSet:
    """Read a manifest; apply ``data.on_bad_row`` to every bad (row, task)."""
    check_data_config(config)
    fields = {str(k): dict(v) for k, v in (config.fields or {}).items()}
    for task in fields:
        if task not in tasks:
            raise ConfigError(f"data.fields.{task}: no such task; configured tasks: {', '.join(tasks)}")
    by_task: dict[str, list[Example]] = {name: [] for name in tasks if only_tasks is None or name in only_tasks}
    report = BadRowReport()

    def bad(line: int, row_id: str, task: str | None, err: BadRow) -> None:
        where = f"{manifest}:{line} (id {row_id}{', task ' + task if task else ''})"
        message = f"{where}: {err}"
        if config.on_bad_row == "error":
            raise DataError(f"{message}\n  fix the row, or set data.on_bad_row=skip to drop bad rows (they are counted and reported)")
        report.add(err.reason, message)

    rows = read_manifest(manifest, hint="set data.manifest / data.dev_manifest to a JSONL file")
    if progress:
        from tqdm.auto import tqdm

        with open(manifest, encoding="utf-8") as f:
            total = sum(1 for _ in f)
        rows = tqdm(rows, total=total, desc=f"loading {Path(manifest).name}" + (f" ({split})" if split else ""), unit="row")
    for line, row in rows:
        if isinstance(row, BadRow):
            report.total += 1
            bad(line, "?", None, row)
            continue
        row_split = row.get("split", default_split)
        if split is not None and row_split != split:
            continue
        row_id = str(row.get("id", "?"))
        try:
            names = row_tasks(row, tasks, fields)
        except BadRow as err:
            report.total += 1
            bad(line, row_id, None, err)
            continue
        for name in names:
            if name not in by_task:
                continue
            report.total += 1
            try:
                by_task[name].append(make_example(row, name, tasks[name], vocab, speech, fields, max_length, features))
            except BadRow as err:
                bad(line, row_id, name, err)
    if report.skipped:
        log.warning(report.summary(str(manifest)))
    return ExampleSet(by_task=by_task, report=report)


def speech_resolver(
    config: DataConfig, base_dir: Optional[Path], manifest: Optional[Path], tokenizer: Any = None, num_units: Optional[int] = None
) -> SpeechResolver:
    """The resolver for a data config: its unit store, and the tokenizer for audio fields."""
    store = None
    if config.unit_store:
        from ..unit_store import UnitStore

        root = _abs(config.unit_store, base_dir)
        try:
            store = UnitStore(root)
        except ValueError as exc:
            raise DataError(f"data.unit_store: {exc}") from None
        stored = store.meta.get("num_units")
        if num_units is not None and stored is not None and int(stored) != int(num_units):
            raise DataError(
                f"data.unit_store: {root} holds units of a {stored}-unit tokenizer but vocab.num_units is {num_units}; "
                f"tokenize with the config's tokenizer or fix vocab.num_units"
            )
    encode = None
    if tokenizer is not None:
        from ..audio import load_audio

        def encode(path: Path) -> torch.Tensor:
            wav = load_audio(path, sample_rate=tokenizer.sample_rate)  # [samples]
            with torch.no_grad():
                return tokenizer.encode_one(wav).long().cpu()  # [frames]

    audio_root = _abs(config.audio_root, base_dir) if config.audio_root else (manifest.parent if manifest else None)
    return SpeechResolver(store, encode, audio_root)


def _abs(path: str, base_dir: Optional[Path]) -> Path:
    p = Path(path)
    return p if p.is_absolute() or base_dir is None else Path(base_dir) / p
