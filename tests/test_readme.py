"""Every shell and Python block of the README runs as written.

The blocks run in a scratch folder holding what they name: ``configs/``, spoken questions
(``question.wav``, ``question1.wav`` ...), ``runs/arith/model`` (a copy of the embedded model),
``data/train.jsonl``, ``audio/`` + ``manifest.jsonl`` + ``tok.yaml`` + ``km.bin`` for the
tokenizer commands. A block preceded by ``<!-- readme-test: skip (why) -->`` is not run (the reason
says what covers it); ``<!-- readme-test: continues -->`` runs a Python block after the previous one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_manifest import arithmetic_rows, write_manifest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?:<!-- readme-test: (?P<mark>[^>]*?) -->\n)?```(?P<lang>bash|python)\n(?P<body>.*?)```", re.S)


def readme_blocks() -> list[tuple[str, str, str, str]]:
    """``(id, language, source, mark)`` of every bash / python block, continued blocks joined."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks: list[tuple[str, str, str, str]] = []
    for m in BLOCK.finditer(text):
        line = text[: m.start("body")].count("\n")
        mark = (m.group("mark") or "").strip()
        body = m.group("body")
        if mark == "continues" and blocks and blocks[-1][1] == "python":
            body = blocks[-1][2] + "\n" + body
        blocks.append((f"README-line-{line}-{m.group('lang')}", m.group("lang"), body, mark))
    return blocks


BLOCKS = readme_blocks()
RUN = [b for b in BLOCKS if not b[3].startswith("skip")]


def test_skips_say_why():
    for block_id, _, _, mark in BLOCKS:
        if mark.startswith("skip"):
            assert re.fullmatch(r"skip \(.{10,}\)", mark), f"{block_id}: write why it is skipped: <!-- readme-test: skip (reason) -->"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    from diffuspeech.model import registered_model_dir

    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "configs", root / "configs")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    demo = subprocess.run([sys.executable, "-m", "diffuspeech.cli", "demo", "--seed", "3", "--out-dir", str(root / "demo")],
                          capture_output=True, text=True, env=env)
    assert demo.returncode == 0, demo.stderr
    (root / "audio").mkdir()
    for name in ("question.wav", "question1.wav", "question2.wav", "q.wav", "audio/q1.wav", "audio/q2.wav"):
        shutil.copy(root / "demo" / "question.wav", root / name)
    shutil.copy(root / "demo" / "answer.wav", root / "audio" / "q3.wav")
    (root / "manifest.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "audio": f"audio/q{i}.wav"}) + "\n" for i in (1, 2, 3)))
    (root / "tok.yaml").write_text("tokenizer: {name: mel_kmeans, path: units/mel16.safetensors}\n")
    shutil.copytree(registered_model_dir("arith"), root / "runs" / "arith" / "model")
    (root / "data").mkdir()
    write_manifest(root / "data" / "train.jsonl", arithmetic_rows(60, num_units=64))
    _sklearn_pickle(root / "km.bin")
    return root, env


def _sklearn_pickle(path: Path) -> None:
    import joblib
    import numpy as np
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=4, n_init=1, random_state=0).fit(np.random.default_rng(0).normal(size=(40, 80)))
    joblib.dump(km, path)


@pytest.mark.parametrize("block_id,lang,body,mark", RUN, ids=[b[0] for b in RUN])
def test_readme_block_runs(scratch, block_id, lang, body, mark):
    root, env = scratch
    if lang == "bash":
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=root, capture_output=True, text=True, env=env, timeout=600)
    else:
        proc = subprocess.run([sys.executable, "-c", body], cwd=root, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"{block_id} failed:\n{body}\n--- stderr ---\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
