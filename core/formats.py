r"""Task formats: a task token, then typed segments (modality + role) on one canvas.

    [task] <sos> question-units <eos> <sot> thinking <eot> <sos> answer-units <eos>
            \_______ condition ______/ \______ target ______/ \_____ target ______/

A segment's start token is always known (part of the condition); its content, its end
token and, when ``max_len`` is set, the end-token filler up to the length budget are the
target of a target segment (LLaDA pads answers with EOS the same way, so at sampling time
a fixed-length canvas learns to end early). New tasks are config (``tasks:`` section),
never code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
from omegaconf import DictConfig, OmegaConf

from .compose import CROSS_CHECKS, SECTION_SCHEMAS, ConfigError, validate_settings
from .modality import MODALITY_CODE, SPECIAL, SPEECH, SPEECH_FEATURES, TEXT
from .vocab import Vocab

CONDITION, TARGET = "condition", "target"


@dataclass
class SegmentSpec:
    field: str  # example key holding the content: a string (text) or a unit sequence (speech)
    modality: str = TEXT  # "text" | "speech" (units) | "speech_features" (audio through encoder + adapters; conditions only)
    role: str = TARGET  # "condition" (never masked) | "target" (masked, predicted)
    max_len: Optional[int] = None  # content budget in tokens; targets are filled with the end token up to it


@dataclass
class TaskSpec:
    token: str  # special token that starts the sequence, e.g. "<|s2s|>"
    segments: list[SegmentSpec] = field(default_factory=list)


def _seg(f: str, modality: str, role: str) -> dict:
    return {"field": f, "modality": modality, "role": role}


# DiffuSpeech's tasks. Field names are the example/manifest keys.
DEFAULT_TASKS: dict[str, dict] = {
    "asr": {"token": "<|asr|>", "segments": [_seg("speech", SPEECH, CONDITION), _seg("text", TEXT, TARGET)]},
    "tts": {"token": "<|tts|>", "segments": [_seg("text", TEXT, CONDITION), _seg("speech", SPEECH, TARGET)]},
    "lm": {"token": "<|lm|>", "segments": [_seg("text", TEXT, TARGET)]},
    "s2t": {"token": "<|s2t|>", "segments": [_seg("question_speech", SPEECH, CONDITION), _seg("answer_text", TEXT, TARGET)]},
    "t2t": {
        "token": "<|t2t|>",
        "segments": [_seg("question_text", TEXT, CONDITION), _seg("thinking", TEXT, TARGET), _seg("answer_text", TEXT, TARGET)],
    },
    "s2s": {
        "token": "<|s2s|>",
        "segments": [_seg("question_speech", SPEECH, CONDITION), _seg("thinking", TEXT, TARGET), _seg("answer_speech", SPEECH, TARGET)],
    },
}


def parse_tasks(node: Any, path: str = "tasks") -> dict[str, TaskSpec]:
    """Validate a ``tasks:`` mapping (name -> {token, segments}) into TaskSpecs."""
    if node is None:
        node = DEFAULT_TASKS
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, dict):
        raise ConfigError(f"{path}: expected a mapping of task name -> {{token, segments}}")
    tasks: dict[str, TaskSpec] = {}
    for name, spec in node.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}.{name}: expected a mapping with keys token, segments")
        segs = spec.get("segments", [])
        if not isinstance(segs, list) or not segs:
            raise ConfigError(f"{path}.{name}.segments: expected a non-empty list of segments")
        parsed = []
        for i, seg in enumerate(segs):
            s = validate_settings(SegmentSpec, dict(seg), f"{path}.{name}.segments[{i}]", "a segment")
            if s.modality not in (TEXT, SPEECH, SPEECH_FEATURES):
                raise ConfigError(f"{path}.{name}.segments[{i}].modality: {s.modality!r}; valid: text, speech, speech_features")
            if s.role not in (CONDITION, TARGET):
                raise ConfigError(f"{path}.{name}.segments[{i}].role: {s.role!r}; valid: condition, target")
            if s.modality == SPEECH_FEATURES and s.role != CONDITION:
                raise ConfigError(f"{path}.{name}.segments[{i}]: modality speech_features is continuous input, so its role must be "
                                  "condition; predict speech as units with modality: speech")
            if s.max_len is not None and s.max_len < 0:
                raise ConfigError(f"{path}.{name}.segments.{i}.max_len: expected a length >= 0 (or null), got {s.max_len}")
            parsed.append(s)
        if not any(s.role == TARGET for s in parsed):
            raise ConfigError(f"{path}.{name}: no segment has role: target; a task needs at least one segment to predict")
        rest = {k: v for k, v in spec.items() if k != "segments"}
        head = validate_settings(TaskSpec, rest, f"{path}.{name}", "a task")
        tasks[str(name)] = TaskSpec(token=head.token, segments=parsed)
    return tasks


SECTION_SCHEMAS["tasks"] = parse_tasks


def check_task_tokens(cfg: Any, base_dir: Any = None) -> None:
    """Every task token must be one of the vocabulary's special tokens."""
    from .vocab import VocabConfig

    vocab = cfg.get("vocab") if hasattr(cfg, "get") else None
    specials = list((vocab or {}).get("specials") or VocabConfig().specials)
    for name, task in parse_tasks(cfg.get("tasks")).items():
        if task.token not in specials:
            raise ConfigError(f"tasks.{name}.token: {task.token!r} is not a special token of the vocabulary; add it to "
                              f"vocab.specials or use one of: {', '.join(str(s) for s in specials)}")


CROSS_CHECKS.append(check_task_tokens)


def check_task_lengths(cfg: Any, base_dir: Any = None) -> None:
    """Length feasibility: a task's target budgets (with their start/end tokens) must fit the backbone's
    longest canvas, and ``data.max_length`` may not exceed it."""
    backbone = cfg.get("backbone") if hasattr(cfg, "get") else None
    if not hasattr(backbone, "get") or backbone.get("path"):
        return  # a checkpoint decides its own length
    longest = backbone.get("max_sequence_length") or backbone.get("max_position_embeddings")
    if not isinstance(longest, int):
        return
    data = cfg.get("data") or {}
    max_length = data.get("max_length") if hasattr(data, "get") else None
    if isinstance(max_length, int) and max_length > longest:
        raise ConfigError(f"data.max_length: {max_length} is longer than the backbone's {longest} positions; "
                          f"set data.max_length <= {longest} or raise backbone.max_sequence_length")
    for name, task in parse_tasks(cfg.get("tasks")).items():
        need = 1 + sum(2 + (s.max_len or 0) + (1 if s.role == TARGET else 0) for s in task.segments)  # task token, start/end, budgets
        if need > longest:
            raise ConfigError(f"tasks.{name}: its segments need at least {need} positions (target budgets + start/end tokens) but "
                              f"the backbone takes {longest}; lower the max_len of its targets or raise backbone.max_sequence_length")


CROSS_CHECKS.append(check_task_lengths)


@dataclass
class Sequence:
    """One laid-out example. All tensors are ``[length]``."""

    ids: torch.Tensor  # long token ids (mask id at positions to generate when built as a canvas)
    modality: torch.Tensor  # long modality codes: text/speech for segment bodies, special for task/start tokens
    target: torch.Tensor  # bool: position belongs to a target segment (masked in training / generated)
    segment: torch.Tensor  # long: index of the target segment (0, 1, ...) or -1
    condition: torch.Tensor  # bool: condition content (masked out by classifier-free guidance's unconditional pass)
    features: Optional[torch.Tensor] = None  # bool: speech_features slots (None: none); their embeddings come from the adapters
    feature_audio: tuple = ()  # the waveforms [samples] of the speech_features segments, in reading order


def _content_ids(vocab: Vocab, seg: SegmentSpec, value: Any, task: str) -> list[int]:
    if value is None:
        raise ValueError(f"task {task!r}: example has no field {seg.field!r}")
    if seg.modality == TEXT:
        if isinstance(value, str):
            return vocab.encode_text(value)
        return [int(v) for v in value]  # already token ids
    units = torch.as_tensor(value, dtype=torch.long).reshape(-1)
    return vocab.units_to_ids(units).tolist()


def _segment_tokens(vocab: Vocab, modality: str) -> tuple[int, int]:
    if modality in (TEXT, SPEECH_FEATURES):  # speech_features stand where a text LM reads its prompt
        return vocab.text_start_id, vocab.text_end_id
    return vocab.speech_start_id, vocab.speech_end_id


def layout(
    task_name: str,
    task: TaskSpec,
    example: dict[str, Any],
    vocab: Vocab,
    *,
    canvas: bool = False,
    target_lengths: dict[str, int] | None = None,
    feature_slots: Callable[[int], int] | None = None,
) -> Sequence:
    """Lay out ``example`` for ``task``.

    canvas=False: training sequence; target contents come from ``example``.
    canvas=True: generation canvas; each target segment gets ``target_lengths[field]``
    (default: its ``max_len``) mask ids plus one for the end token.
    A ``speech_features`` field holds a waveform ``[samples]``; it takes ``feature_slots(samples)``
    positions (:meth:`diffuspeech.speech_features.SpeechFeatures.slots`).
    """
    ids: list[int] = [vocab.special(task.token)]
    mod: list[int] = [MODALITY_CODE[SPECIAL]]
    tgt: list[bool] = [False]
    seg_idx: list[int] = [-1]
    cond: list[bool] = [False]
    feats: list[bool] = [False]
    audio: list[torch.Tensor] = []
    n_target = 0
    for seg in task.segments:
        start, end = _segment_tokens(vocab, seg.modality)
        code = MODALITY_CODE[SPEECH if seg.modality == SPEECH_FEATURES else seg.modality]
        ids.append(start), mod.append(MODALITY_CODE[SPECIAL]), tgt.append(False), seg_idx.append(-1), cond.append(False)
        feats += [False] * (len(ids) - len(feats))
        if seg.modality == SPEECH_FEATURES:
            wav = example.get(seg.field)
            if wav is None:
                raise ValueError(f"task {task_name!r}: example has no field {seg.field!r}")
            if feature_slots is None:
                raise ValueError(f"task {task_name!r}: segment {seg.field!r} is speech_features; lay it out with the model's "
                                 "feature_slots (an encoder and adapters)")
            wav = torch.as_tensor(wav).reshape(-1)
            n = int(feature_slots(wav.numel()))
            audio.append(wav)
            ids += [vocab.pad_id] * n + [end]
            mod += [code] * n + [MODALITY_CODE[SPECIAL]]
            tgt += [False] * (n + 1)
            seg_idx += [-1] * (n + 1)
            cond += [True] * (n + 1)
            feats += [True] * n + [False]
            continue
        if seg.role == CONDITION:
            body = _content_ids(vocab, seg, example.get(seg.field), task_name) + [end]
            ids += body
            mod += [code] * len(body)
            tgt += [False] * len(body)
            seg_idx += [-1] * len(body)
            cond += [True] * len(body)
            continue
        if canvas:
            n = (target_lengths or {}).get(seg.field, seg.max_len)
            if n is None:
                raise ValueError(
                    f"task {task_name!r}: target segment {seg.field!r} needs a length: give target_lengths[{seg.field!r}] "
                    f"or set tasks.{task_name}.segments[].max_len"
                )
            body = [vocab.mask_id] * (int(n) + 1)
        else:
            content = _content_ids(vocab, seg, example.get(seg.field), task_name)
            if seg.max_len is not None and len(content) > seg.max_len:
                raise ValueError(
                    f"task {task_name!r}: field {seg.field!r} has {len(content)} tokens, over its max_len {seg.max_len}"
                )
            fill = (seg.max_len - len(content)) if seg.max_len is not None else 0
            body = content + [end] * (1 + fill)
        ids += body
        mod += [code] * len(body)
        tgt += [True] * len(body)
        seg_idx += [n_target] * len(body)
        cond += [False] * len(body)
        n_target += 1
    feats += [False] * (len(ids) - len(feats))
    return Sequence(
        ids=torch.tensor(ids, dtype=torch.long),
        modality=torch.tensor(mod, dtype=torch.long),
        target=torch.tensor(tgt, dtype=torch.bool),
        segment=torch.tensor(seg_idx, dtype=torch.long),
        condition=torch.tensor(cond, dtype=torch.bool),
        features=torch.tensor(feats, dtype=torch.bool) if audio else None,
        feature_audio=tuple(audio),
    )


def split_targets(task: TaskSpec, seq_ids: torch.Tensor, segment: torch.Tensor, vocab: Vocab) -> dict[str, Union[str, torch.Tensor]]:
    """Read each target segment back from a (generated) sequence, cut at its first end token.

    Text fields become strings, speech fields unit tensors ``[frames]`` in [0, K).
    """
    out: dict[str, Union[str, torch.Tensor]] = {}
    targets = [s for s in task.segments if s.role == TARGET]
    for i, seg in enumerate(targets):
        body = seq_ids[segment == i]
        _, end = _segment_tokens(vocab, seg.modality)
        stop = (body == end).nonzero()
        if len(stop):
            body = body[: int(stop[0])]
        if seg.modality == TEXT:
            out[seg.field] = vocab.decode_text(body)
        else:
            out[seg.field] = vocab.ids_to_units(body)
    return out


def collate(seqs: list[Sequence], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of sequences into ``[batch, max_len]`` tensors (+ ``valid``)."""
    length = max(len(s.ids) for s in seqs)
    b = len(seqs)
    out = {
        "ids": torch.full((b, length), pad_id, dtype=torch.long),
        "modality": torch.full((b, length), MODALITY_CODE[SPECIAL], dtype=torch.long),
        "target": torch.zeros((b, length), dtype=torch.bool),
        "segment": torch.full((b, length), -1, dtype=torch.long),
        "condition": torch.zeros((b, length), dtype=torch.bool),
        "valid": torch.zeros((b, length), dtype=torch.bool),
    }
    for i, s in enumerate(seqs):
        n = len(s.ids)
        out["ids"][i, :n] = s.ids
        out["modality"][i, :n] = s.modality
        out["target"][i, :n] = s.target
        out["segment"][i, :n] = s.segment
        out["condition"][i, :n] = s.condition
        out["valid"][i, :n] = True
    clips = [wav for s in seqs for wav in s.feature_audio]
    if clips:  # speech_features: the slots, and the clips padded into one batch (reading order, row by row)
        out["features"] = torch.zeros((b, length), dtype=torch.bool)
        for i, s in enumerate(seqs):
            if s.features is not None:
                out["features"][i, : len(s.ids)] = s.features
        out["feature_lengths"] = torch.tensor([len(w) for w in clips], dtype=torch.long)
        out["feature_audio"] = torch.zeros((len(clips), int(out["feature_lengths"].max())), dtype=torch.float32)
        for j, w in enumerate(clips):
            out["feature_audio"][j, : len(w)] = w.float()
    return out
