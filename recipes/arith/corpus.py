"""Spoken-arithmetic corpus (``diffuspeech recipe arith prepare``).

Questions "what is A plus B" (A, B in 0..10) and "what is A minus B" (A >= B) are spoken by
espeak-ng voices: every English accent (``en-us``, ``en-gb-scotland`` ...) combined with every
usable voice variant (``+m3``, ``+croak`` ...), at random speed and pitch. Each utterance
carries the silent-thought trace ("7 + 3 = 10"), the text answer ("10"), and the spoken
answer: the number word in the fixed assistant voice ``en-us+f2`` at speed 150 (one wav per
answer value, shared).

Split rule (deterministic in ``seed``):

* dev variants: ``dev_variants`` variants are drawn from the usable ones; every voice built
  on them (all accents) is dev only, never seen in training;
* dev combos: of the remaining (train-variant) utterances, a ``dev_combo_fraction`` share is
  moved to dev: a question spoken by a voice whose other questions are in training, while
  that (question, voice) pair is not (each voice speaks distinct questions);
* every question is spoken by many training voices (questions are dealt round-robin from
  shuffled decks, so counts differ by at most one).

Reserved voices (:data:`RESERVED_VOICES`) are never synthesised: a variant is excluded when
its file id or its ``name`` line is a reserved name or has one as a name part,
case-insensitive (so ``f3`` = "female3", ``m5`` = "male5" and ``AnxiousAndy`` are excluded,
``f5`` = "female5" and ``belinda`` are not). Variants whose settings are a reserved variant's
up to pitch and one more line (``Gene``, the ``klatt`` modes) are excluded as near-copies, and
a few effect voices are excluded as unintelligible or unvoiced (:data:`EXCLUDED_VARIANTS`).

Audio is 16 kHz mono 16-bit WAV. espeak-ng keeps internal state across calls, so audio is
synthesised in chunks of :data:`CHUNK` utterances, each in a fresh worker process: the same
seed then gives byte-identical files whatever the number of workers.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import re
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from diffuspeech.audio import write_audio
from diffuspeech.manifest import read_rows

from .espeak import EspeakError, Variant, get_espeak, locate_espeak
from .judge import resample_to
from .number_words import NUMBER_WORDS, number_to_words

SAMPLE_RATE = 16000  # Hz of every written wav
ASSISTANT_VOICE = "en-us+f2"  # the fixed voice of spoken answers (DESIGN section 7)
ASSISTANT_SPEED = 150  # words per minute
ASSISTANT_PITCH = 50  # espeak-ng default

# Never used for training or tuning: an outside evaluation speaks questions with them.
RESERVED_VOICES: tuple[str, ...] = (
    "Annie", "Boris", "Gene2", "Linda", "Michael", "Steph2", "female3", "male5", "klatt3", "travis", "Andy", "norbert",
)

# Usable-but-excluded variants, with the reason (not reserved; see docs/arith.md).
EXCLUDED_VARIANTS: dict[str, str] = {
    "fast": "a test variant of the synthesiser (name 'fast_test'), not a voice",
    "Demonic": "deliberately distorted effect voice (first formant lowered to 70%)",
    "kaukovalta": "'distant' effect voice: formants shifted and roughness 4",
    "Lee": "third formant at 9% of normal: vowels lose their identity",
    "whisper": "unvoiced (whispered); the task's voices, reserved ones included, are voiced",
    "whisperf": "unvoiced (whispered); the task's voices, reserved ones included, are voiced",
}

# English accents of espeak-ng (en-shaw, the Shavian-alphabet voice, speaks like en-gb).
LANGUAGES: tuple[str, ...] = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp", "en-029", "en-us-nyc",
)

CHUNK = 512  # utterances per fresh synthesis process (fixed: part of the determinism contract)
OPERAND_MAX = 10  # A, B in 0..10


@dataclass
class ArithCorpusConfig:
    out: str = "arith-corpus"  # output folder (train.jsonl, dev.jsonl, corpus.json, audio/)
    seed: int = 0  # everything random (voices, questions, speeds, pitches, the split) follows it
    questions_per_voice: int = 12  # distinct questions each (accent, variant) voice speaks
    dev_variants: int = 8  # variants held out entirely for dev (all their accents)
    dev_combo_fraction: float = 0.05  # share of train-voice utterances moved to dev as unseen (question, voice) pairs
    languages: tuple[str, ...] = LANGUAGES  # English accents combined with each variant
    speed_range: tuple[int, int] = (130, 190)  # words per minute, uniform integers (inclusive)
    pitch_range: tuple[int, int] = (30, 70)  # espeak-ng base pitch 0..100, uniform integers (inclusive)
    workers: int = 2  # synthesis processes (0: in this process; audio then depends on call history)
    extra_excluded: tuple[str, ...] = field(default_factory=tuple)  # more variant ids to leave out


@dataclass(frozen=True)
class Question:
    a: int
    op: str  # "plus" or "minus"
    b: int

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "plus" else self.a - self.b

    @property
    def text(self) -> str:
        return f"what is {number_to_words(self.a)} {self.op} {number_to_words(self.b)}"

    @property
    def thinking(self) -> str:
        return f"{self.a} {'+' if self.op == 'plus' else '-'} {self.b} = {self.answer}"


def all_questions() -> list[Question]:
    """The 187 questions: 121 sums and 66 differences with a non-negative result."""
    qs = [Question(a, "plus", b) for a in range(OPERAND_MAX + 1) for b in range(OPERAND_MAX + 1)]
    qs += [Question(a, "minus", b) for a in range(OPERAND_MAX + 1) for b in range(a + 1)]
    return qs


def _tokens(name: str) -> list[str]:
    """Name parts: "anxiousAndy" -> ["anxious", "andy"], "Mr_Serious" -> ["mr", "serious"]."""
    return [t.lower() for t in re.findall(r"[A-Z]?[a-z]+\d*|[A-Z]+\d*(?![a-z])|\d+", name)]


def is_reserved(*names: str) -> bool:
    """True if any of ``names`` is a reserved voice name or has one as a name part (case-insensitive).

    ``female3``, ``Andy`` and ``anxiousAndy`` are reserved; ``female5`` and ``Belinda`` are not.
    """
    reserved = {r.lower() for r in RESERVED_VOICES}
    return any(n.lower() in reserved or reserved & set(_tokens(n)) for n in names if n)


def _settings(path: Path) -> set[str]:
    """A variant file's settings lines, without comments, name, language and gender."""
    out = set()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = re.split(r"//|#", line)[0].strip()
        if line and line.split()[0].lower() not in ("name", "language", "gender"):
            out.add(" ".join(line.split()))
    return out


def near_reserved(variants: list[Variant], data_path: Path) -> dict[str, str]:
    """Variants whose settings equal a reserved variant's apart from pitch and at most one
    other line (e.g. ``Gene`` = ``Gene2`` at another pitch; ``klatt`` = ``klatt3`` with another
    Klatt source mode): training on them would be training on the reserved voice."""
    folder = data_path / "voices" / "!v"
    reserved = [v for v in variants if is_reserved(v.id, v.name)]
    out: dict[str, str] = {}
    for v in variants:
        if v in reserved or not (folder / v.id).is_file():
            continue
        mine = _settings(folder / v.id)
        for r in reserved:
            if not (folder / r.id).is_file():
                continue
            diff = {line for line in mine ^ _settings(folder / r.id) if not line.startswith("pitch")}
            if len(diff) <= 2:  # one changed line shows up twice in the symmetric difference
                out[v.id] = f"near-copy of reserved {r.id} (differs in pitch and {len(diff) // 2 or 'no'} other setting)"
                break
    return out


def usable_variants(variants: list[Variant], excluded: dict[str, str]) -> list[Variant]:
    """Variants that may speak questions: not reserved (by id or name) and not in ``excluded``."""
    skip = {k.lower() for k in excluded}
    return [v for v in variants if not is_reserved(v.id, v.name) and v.id.lower() not in skip]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def _deal_questions(questions: list[Question], n_voices: int, per_voice: int, rng: np.random.Generator) -> list[list[Question]]:
    """Deal ``per_voice`` distinct questions to each voice from shuffled decks (balanced counts)."""
    if per_voice > len(questions):
        raise ValueError(f"questions_per_voice={per_voice} exceeds the {len(questions)} distinct questions")
    stream: list[int] = []
    while len(stream) < n_voices * per_voice + len(questions):
        stream.extend(rng.permutation(len(questions)).tolist())
    hands, pos = [], 0
    for _ in range(n_voices):
        hand: list[int] = []
        while len(hand) < per_voice:
            idx = stream[pos]
            pos += 1
            if idx in hand:  # a deck boundary repeated a question: defer it to the next voice
                stream.insert(pos + per_voice, idx)
                continue
            hand.append(idx)
        hands.append([questions[i] for i in hand])
    return hands


def plan_corpus(cfg: ArithCorpusConfig, variants: list[Variant], near: dict[str, str] | None = None) -> tuple[list[dict], dict]:
    """The manifest rows (without audio) and the corpus description; no synthesis.

    ``near``: variants to exclude as near-copies of reserved ones (see :func:`near_reserved`).
    """
    if cfg.questions_per_voice < 1:
        raise ValueError(f"questions_per_voice must be >= 1, got {cfg.questions_per_voice}")
    if not 0.0 <= cfg.dev_combo_fraction < 1.0:
        raise ValueError(f"dev_combo_fraction must be in [0, 1), got {cfg.dev_combo_fraction}")
    rng = np.random.default_rng(cfg.seed)
    excluded = dict(near or {}) | dict(EXCLUDED_VARIANTS) | {k: "excluded by the user" for k in cfg.extra_excluded}
    usable = usable_variants(variants, excluded)
    if cfg.dev_variants >= len(usable):
        raise ValueError(f"dev_variants={cfg.dev_variants} leaves no training variant (usable: {len(usable)})")
    for lang in cfg.languages:
        if is_reserved(lang):
            raise ValueError(f"language {lang!r} names a reserved voice")
    dev_ids = {usable[i].id for i in rng.choice(len(usable), size=cfg.dev_variants, replace=False)}
    voices = [(lang, v) for v in usable for lang in cfg.languages]  # [(language, Variant)]
    hands = _deal_questions(all_questions(), len(voices), cfg.questions_per_voice, rng)

    rows: list[dict] = []
    for (lang, var), hand in zip(voices, hands):
        for q in hand:
            speed = int(rng.integers(cfg.speed_range[0], cfg.speed_range[1] + 1))
            pitch = int(rng.integers(cfg.pitch_range[0], cfg.pitch_range[1] + 1))
            held_combo = var.id not in dev_ids and rng.random() < cfg.dev_combo_fraction
            split = "dev" if (var.id in dev_ids or held_combo) else "train"
            rows.append({
                "id": "",
                "task": "s2s",
                "split": split,
                "question_audio": "",
                "question_text": q.text,
                "thinking": q.thinking,
                "answer_text": str(q.answer),
                "answer_words": number_to_words(q.answer),
                "answer_audio": f"audio/answers/{number_to_words(q.answer)}.wav",
                "voice": f"{lang}+{var.id}",
                "speed": speed,
                "pitch": pitch,
                "language": lang,
                "variant": var.id,
                "dev_reason": ("held-out variant" if var.id in dev_ids else "held-out combo") if split == "dev" else "",
            })
    order = rng.permutation(len(rows))  # shuffle so that a file prefix is a fair sample
    rows = [rows[i] for i in order]
    counters = {"train": 0, "dev": 0}
    for row in rows:
        n = counters[row["split"]]
        counters[row["split"]] += 1
        row["id"] = f"{row['split']}-{n:05d}"
        row["question_audio"] = f"audio/{row['split']}/{row['id']}_{_safe(row['voice'])}.wav"
    info = {
        "seed": cfg.seed,
        "sample_rate": SAMPLE_RATE,
        "assistant": {"voice": ASSISTANT_VOICE, "speed": ASSISTANT_SPEED, "pitch": ASSISTANT_PITCH},
        "languages": list(cfg.languages),
        "train_variants": sorted((v.id for v in usable if v.id not in dev_ids), key=str.lower),
        "dev_variants": sorted(dev_ids, key=str.lower),
        "reserved_voices": list(RESERVED_VOICES),
        "reserved_variants_skipped": sorted((v.id for v in variants if is_reserved(v.id, v.name)), key=str.lower),
        "excluded_variants": excluded,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "counts": dict(counters),
        "split_rule": (
            f"{cfg.dev_variants} variants drawn with the seed are dev-only (all accents); of the other utterances "
            f"a {cfg.dev_combo_fraction:g} share (Bernoulli per utterance) is dev: an unseen (question, voice) pair"
        ),
    }
    return rows, info


# --- synthesis (runs in fresh worker processes) ---------------------------------------------


def _synthesize_to(path: Path, text: str, voice: str, speed: int, pitch: int) -> float:
    wav, sr = get_espeak().synthesize(text, voice=voice, speed=speed, pitch=pitch)  # [S] float32 at 22050
    wav16 = resample_to(wav, sr, SAMPLE_RATE)  # [S'] at 16 kHz
    write_audio(path, torch.from_numpy(np.ascontiguousarray(wav16)), SAMPLE_RATE)
    return len(wav16) / SAMPLE_RATE


def _synthesize_jobs(jobs: list[tuple[str, str, str, int, int]], progress=None) -> list[float]:
    """jobs: (path, text, voice, speed, pitch) -> durations in seconds."""
    out = []
    for path, text, voice, speed, pitch in jobs:
        out.append(_synthesize_to(Path(path), text, voice, speed, pitch))
        if progress is not None:
            progress(1)
    return out


def _worker(index: int, jobs: list, results) -> None:
    try:
        durations = _synthesize_jobs(jobs, progress=lambda n: results.put(("tick", index, n)))
        results.put(("done", index, durations))
    except BaseException:  # noqa: BLE001 - reported to the parent with the traceback
        results.put(("error", index, traceback.format_exc()))


def _run_chunks(chunks: list[list], workers: int, bar: tqdm) -> list[list[float]]:
    """Each chunk in its own fresh (spawned) process, at most ``workers`` at a time."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    pending = list(range(len(chunks)))
    running: dict[int, mp.Process] = {}
    done: dict[int, list[float]] = {}
    try:
        while pending or running:
            while pending and len(running) < workers:
                i = pending.pop(0)
                running[i] = ctx.Process(target=_worker, args=(i, chunks[i], results), daemon=True)
                running[i].start()
            try:
                kind, i, payload = results.get(timeout=0.5)
            except queue.Empty:
                for i, proc in list(running.items()):
                    if not proc.is_alive() and i not in done:
                        raise RuntimeError(f"synthesis worker for chunk {i} died (exit code {proc.exitcode})")  # noqa: B904
                continue
            if kind == "tick":
                bar.update(payload)
            elif kind == "error":
                raise RuntimeError(f"synthesis worker for chunk {i} failed:\n{payload}")
            else:
                done[i] = payload
                running.pop(i).join()
    finally:
        for proc in running.values():
            proc.terminate()
            proc.join()
    return [done[i] for i in range(len(chunks))]


def prepare(cfg: ArithCorpusConfig, show_progress: bool = True) -> dict:
    """Generate the corpus into ``cfg.out``; returns the description also written to corpus.json."""
    locate_espeak()  # clear error naming `pip install espeakng-loader` before anything is planned
    t0 = time.perf_counter()
    tts = get_espeak()
    for lang in cfg.languages:
        tts.check_voice(lang)
    rows, info = plan_corpus(cfg, tts.variants(), near_reserved(tts.variants(), tts.data_path))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    answer_jobs = [
        (str(out / f"audio/answers/{w}.wav"), w, ASSISTANT_VOICE, ASSISTANT_SPEED, ASSISTANT_PITCH) for w in NUMBER_WORDS
    ]
    question_jobs = [(str(out / r["question_audio"]), r["question_text"], r["voice"], r["speed"], r["pitch"]) for r in rows]
    chunks = [answer_jobs] + [question_jobs[i : i + CHUNK] for i in range(0, len(question_jobs), CHUNK)]
    bar = tqdm(total=len(answer_jobs) + len(question_jobs), desc="arith corpus", unit="utt", disable=not show_progress)
    with bar:
        if cfg.workers > 0:
            durations = _run_chunks(chunks, cfg.workers, bar)
        else:
            durations = [_synthesize_jobs(c, progress=bar.update) for c in chunks]
    for row, dur in zip(rows, (d for chunk in durations[1:] for d in chunk)):
        row["question_duration_s"] = round(dur, 3)

    for split in ("train", "dev"):
        path = out / f"{split}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in sorted((r for r in rows if r["split"] == split), key=lambda r: r["id"]):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    total_s = sum(r["question_duration_s"] for r in rows)
    info["hours_of_question_audio"] = round(total_s / 3600, 3)
    info["generation_seconds"] = round(time.perf_counter() - t0, 1)
    (out / "corpus.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``train.jsonl``/``dev.jsonl``; audio paths stay relative to its folder."""
    return read_rows(path, hint="make the corpus with `diffuspeech recipe arith prepare --out DIR`")


__all__ = [
    "ASSISTANT_PITCH", "ASSISTANT_SPEED", "ASSISTANT_VOICE", "ArithCorpusConfig", "EXCLUDED_VARIANTS", "EspeakError",
    "LANGUAGES", "Question", "RESERVED_VOICES", "all_questions", "is_reserved", "plan_corpus", "prepare",
    "read_manifest", "usable_variants",
]
