"""Spoken-arithmetic corpus: number words, questions, the reserved-voice policy, the split,
and ``diffuspeech recipe arith prepare`` end to end on a tiny corpus."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from diffuspeech.audio import load_audio
from diffuspeech.cli import main
from diffuspeech.recipes.arith.corpus import (
    EXCLUDED_VARIANTS,
    RESERVED_VOICES,
    ArithCorpusConfig,
    all_questions,
    is_reserved,
    near_reserved,
    plan_corpus,
    prepare,
    read_manifest,
    usable_variants,
)
from diffuspeech.recipes.arith.espeak import get_espeak
from diffuspeech.recipes.arith.number_words import NUMBER_WORDS, number_to_words, words_to_number

FIELDS = {
    "id", "task", "split", "question_audio", "question_text", "thinking", "answer_text",
    "answer_words", "answer_audio", "voice", "speed", "pitch",
}


def test_number_words_round_trip():
    for n in range(21):
        assert words_to_number(number_to_words(n)) == n
    assert number_to_words(13) == "thirteen" and words_to_number(" Twenty ") == 20
    assert words_to_number("twenty one") is None and words_to_number("") is None
    for bad in (-1, 21, 2.0, True):
        with pytest.raises(ValueError, match="0..20"):
            number_to_words(bad)


def test_questions_thinking_and_answers():
    qs = all_questions()
    assert len(qs) == 121 + 66 and len(set(qs)) == len(qs)
    for q in qs:
        a, op, b = re.fullmatch(r"what is (\w+) (plus|minus) (\w+)", q.text).groups()
        x, y = words_to_number(a), words_to_number(b)
        assert (x, y) == (q.a, q.b) and 0 <= x <= 10 and 0 <= y <= 10
        assert q.answer == (x + y if op == "plus" else x - y) and 0 <= q.answer <= 20
        assert q.thinking == f"{x} {'+' if op == 'plus' else '-'} {y} = {q.answer}"


def test_reserved_names_match_ids_names_and_name_parts():
    for name in ("Annie", "boris", "GENE2", "female3", "male5", "klatt3", "anxiousAndy", "Steph2"):
        assert is_reserved(name), name
    for name in ("female5", "Belinda", "Gene", "michel", "steph3", "m3", "female2"):
        assert not is_reserved(name), name


@pytest.fixture(scope="module")
def variants():
    return get_espeak().variants()


def test_usable_voices_never_include_reserved_ones(variants):
    near = near_reserved(variants, get_espeak().data_path)
    usable = usable_variants(variants, EXCLUDED_VARIANTS | near)
    reserved = {r.lower() for r in RESERVED_VOICES}
    ids = {v.id.lower() for v in usable} | {v.name.lower() for v in usable}
    assert not ids & reserved
    assert not {"f3", "m5", "anxiousandy", "gene", "klatt"} & ids  # by name line, name part, near-copy
    assert {"f2", "m3", "croak", "belinda", "f5"} <= ids
    assert near["Gene"].startswith("near-copy of reserved Gene2")
    assert len(usable) >= 60


def test_plan_split_is_deterministic_and_disjoint(variants):
    cfg = ArithCorpusConfig(questions_per_voice=3, languages=("en-us", "en-gb"), dev_variants=6, dev_combo_fraction=0.1)
    rows, info = plan_corpus(cfg, variants)
    again, _ = plan_corpus(cfg, variants)
    other, _ = plan_corpus(ArithCorpusConfig(**{**cfg.__dict__, "seed": 1}), variants)
    assert rows == again and rows != other
    train = [r for r in rows if r["split"] == "train"]
    dev = [r for r in rows if r["split"] == "dev"]
    assert {r["variant"] for r in train}.isdisjoint(info["dev_variants"])
    assert {r["dev_reason"] for r in dev} == {"held-out variant", "held-out combo"}
    seen_pairs = {(r["question_text"], r["voice"]) for r in train}
    assert not any((r["question_text"], r["voice"]) in seen_pairs for r in dev)
    counts = Counter(r["question_text"] for r in train)
    assert len(counts) == 187  # every question is trained on
    assert all(not is_reserved(r["variant"]) for r in rows)
    assert all(130 <= r["speed"] <= 190 and 30 <= r["pitch"] <= 70 for r in rows)


def _check_corpus(out: Path) -> list[dict]:
    info = json.loads((out / "corpus.json").read_text())
    rows = read_manifest(out / "train.jsonl") + read_manifest(out / "dev.jsonl")
    assert len(rows) == info["counts"]["train"] + info["counts"]["dev"] > 0
    reserved = {r.lower() for r in RESERVED_VOICES}
    for r in rows:
        assert FIELDS <= set(r)
        assert r["task"] == "s2s" and r["split"] in ("train", "dev")
        assert r["answer_words"] == number_to_words(int(r["answer_text"]))
        assert r["thinking"].endswith(f"= {r['answer_text']}")
        assert r["answer_audio"] == f"audio/answers/{r['answer_words']}.wav"
        variant = r["voice"].split("+")[1].lower()
        assert variant not in reserved and not is_reserved(variant)
    for r in rows[:5]:
        wav = load_audio(out / r["question_audio"], sample_rate=None)
        assert wav.dim() == 1 and 0.5 < wav.numel() / 16000 < 6
        assert abs(wav.numel() / 16000 - r["question_duration_s"]) < 0.01
    for w in NUMBER_WORDS:
        assert load_audio(out / f"audio/answers/{w}.wav", sample_rate=None).numel() > 4000
    return rows


def test_prepare_cli_writes_a_valid_corpus(tmp_path, capsys):
    out = tmp_path / "corpus"
    rc = main([
        "recipe", "arith", "prepare", "--out", str(out), "--questions-per-voice", "1", "--languages", "en-us",
        "--dev-variants", "4", "--workers", "0", "--no-progress",
    ])
    assert rc == 0
    assert "train +" in capsys.readouterr().out
    rows = _check_corpus(out)
    dev_voices = {r["variant"] for r in rows if r["dev_reason"] == "held-out variant"}
    assert len(dev_voices) == 4


def test_spawned_synthesis_is_byte_identical_whatever_the_workers(tmp_path, variants):
    usable = usable_variants(variants, EXCLUDED_VARIANTS | near_reserved(variants, get_espeak().data_path))
    keep = ("m3", "f4", "croak", "m7", "Mike", "david")
    skip = tuple(v.id for v in usable if v.id not in keep)
    digests = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        cfg = ArithCorpusConfig(
            out=str(out), questions_per_voice=2, languages=("en-us",), dev_variants=1, workers=workers, extra_excluded=skip
        )
        prepare(cfg, show_progress=False)
        files = sorted(p for p in out.rglob("*.wav"))
        digests.append({p.relative_to(out).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in files})
    assert len(digests[0]) == 21 + 12
    assert digests[0] == digests[1]


def test_prepare_without_espeak_names_the_package(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # as if the package were not installed
    rc = main(["recipe", "arith", "prepare", "--out", str(tmp_path / "c"), "--workers", "0", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "espeakng-loader missing" in err and "pip install 'diffuspeech[arith]'" in err
    assert not (tmp_path / "c").exists()
