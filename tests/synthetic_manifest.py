"""A synthetic spoken-arithmetic manifest for trainer tests (no audio: each word is a fixed unit pattern)."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def word_units(word: str, num_units: int) -> list[int]:
    """A deterministic 2..4-unit "pronunciation" of a word."""
    rng = random.Random(word)
    return [rng.randrange(num_units) for _ in range(2 + len(word) % 3)]


def speak(text: str, num_units: int) -> list[int]:
    return [u for w in text.split() for u in word_units(w, num_units)]


def arithmetic_rows(n: int, num_units: int = 64, seed: int = 0, dev_every: int = 5) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randrange(6), rng.randrange(5)
        question = f"what is {WORDS[a]} plus {WORDS[b]}"
        answer = WORDS[a + b]
        rows.append({
            "id": f"q{i}",
            "split": "dev" if dev_every and i % dev_every == dev_every - 1 else "train",
            "question_text": question,
            "thinking": f"{a} + {b} = {a + b}",
            "answer_text": str(a + b),
            "question_speech": speak(question, num_units),
            "answer_speech": {"units": speak(answer, num_units)},
        })
    return rows


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
