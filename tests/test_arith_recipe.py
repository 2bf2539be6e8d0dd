"""Smoke run of the embedded model's recipe: prepare -> train (a few steps) -> generate."""

import json

import pytest

from diffuspeech.cli import main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    rc = main(["recipe", "arith", "prepare", "--out", str(out), "--questions-per-voice", "1", "--languages", "en-us",
               "--dev-variants", "2", "--workers", "0", "--no-progress"])
    assert rc == 0
    return out


def test_recipe_smoke_run(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["recipe", "arith", "train", "--data", str(corpus), "--out", str(run), "--question-units", "16", "--scale", "0.004",
               "data.batch_size=4", "data.dev_max_examples=4"])
    assert rc == 0
    report = json.loads((run / "recipe_report.json").read_text())
    assert report["units"]["question_units"] == 16 and report["units"]["answer_units"] > 100
    assert report["ceiling"]["ground_truth_ceiling"] == 1.0  # the judge hears the assistant voice's own audio
    assert report["ceiling"]["resynthesis_ceiling"] >= 0.8  # exact answer frames keep the spoken channel intelligible
    model = run / "model"
    prov = json.loads((model / "provenance.json").read_text())
    assert {c["name"] for c in prov["components"].values()} >= {"mel_kmeans", "griffinlim", "llada", "per_modality"}
    capsys.readouterr()
    wav = sorted((corpus / "audio" / "dev").glob("*.wav"))[0]
    assert main(["generate", "--task", "s2s", "--model", str(model), "--out-dir", str(tmp_path / "gen"), str(wav)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["input"] == str(wav) and set(line) >= {"thinking", "text", "audio"}
