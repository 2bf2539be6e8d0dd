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
               "--speed-perturb", "0.9,1.1", "data.batch_size=4", "data.dev_max_examples=4"])
    assert rc == 0
    report = json.loads((run / "recipe_report.json").read_text())
    rows = [json.loads(line) for line in (run / "artefacts" / "manifest.jsonl").read_text().splitlines()]
    originals = [r for r in rows if "@" not in r["id"]]
    copies = [r for r in rows if "@" in r["id"]]
    n_train = sum(r["split"] == "train" for r in originals)
    assert report["speed_perturb"] == {"rates": [0.9, 1.1], "extra_rows": 2 * n_train, "over_max_len": 0}
    assert len(copies) == 2 * n_train and {r["split"] for r in copies} == {"train"}  # dev questions stay as spoken
    by_id = {r["id"]: r for r in originals}
    for copy in copies:
        source, rate = copy["id"].split("@")
        assert copy["question_text"] == by_id[source]["question_text"] and rate in ("0.9", "1.1")
        units = copy["question_speech"]["units"]
        assert units and all(0 <= u < 16 for u in units)  # read onto the question units only
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


def test_speed_perturbation_scales_frequency_and_tempo():
    import torch

    from diffuspeech.audio import AudioError, speed_perturb

    sr = 16000
    tone = torch.sin(2 * torch.pi * 440 * torch.arange(sr) / sr)  # [T] 1 s of 440 Hz
    for rate in (0.9, 1.1):
        out = speed_perturb(tone, sr, rate)
        assert abs(out.shape[0] - sr / rate) <= 2  # played faster -> shorter
        peak_hz = torch.fft.rfft(out).abs().argmax().item() * sr / out.shape[0]
        assert abs(peak_hz - 440 * rate) < 3  # and every frequency moves by the same factor
    assert speed_perturb(tone, sr, 1.0) is tone
    with pytest.raises(AudioError, match="rates must be finite and > 0"):
        speed_perturb(tone, sr, 0.0)


def test_speed_perturb_flag_rejects_bad_rates(capsys):
    with pytest.raises(SystemExit):
        main(["recipe", "arith", "train", "--speed-perturb", "0.9,fast"])
    assert "comma-separated rates" in capsys.readouterr().err
    for bad in ("0.9,-1", "0.9,inf"):
        with pytest.raises(SystemExit):
            main(["recipe", "arith", "train", "--speed-perturb", bad])
        assert "rates must be finite and > 0" in capsys.readouterr().err
    for bad in ("0.9,0.9", "1.0,1.1"):
        with pytest.raises(SystemExit):
            main(["recipe", "arith", "train", "--speed-perturb", bad])
        assert "distinct and not 1.0" in capsys.readouterr().err


def test_eval_cli_on_a_dev_subset_with_overrides_after_tasks(corpus, tmp_path, capsys):
    out = tmp_path / "ev"
    rc = main(["eval", "arith", "--data", str(corpus), "--model", "arith", "--out", str(out), "--limit", "3", "--no-progress",
               "--tasks", "s2s", "asr", "generation.steps=4", "generation.speed_votes=[1.0,0.9]"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rows"] == 3 and metrics["overrides"] == ["generation.steps=4", "generation.speed_votes=[1.0,0.9]"]
    assert {"spoken_answer_accuracy", "thinking_exact_match", "asr_wer", "speed_vote_agreement"} <= set(metrics)
    assert "s2t_accuracy" not in metrics and (out / "metrics.md").is_file() and (out / "trajectory.png").is_file()
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["agreement"] in (0.5, 1.0) for r in rows)
    capsys.readouterr()
    assert main(["eval", "arith", "--data", str(corpus), "--tasks", "s2x"]) == 2
    assert "unknown or missing task(s) ['s2x']" in capsys.readouterr().err


def test_speaker_breakdown_reports_unseen_voices_and_the_worst_variant():
    from diffuspeech.recipes.arith.evaluate import speaker_breakdown

    rows, per_row = [], []
    for i in range(12):
        variant = "m1" if i < 6 else "f3"
        rows.append({"answer_words": "five", "thinking": "2 + 3 = 5", "variant": variant,
                     "dev_reason": "held-out variant" if variant == "f3" else "held-out combo"})
        right = variant == "m1" or i % 2 == 0  # m1 always right, f3 half right
        per_row.append({"heard": "five" if right else "four", "thinking": "2 + 3 = 5"})
    out = speaker_breakdown(rows, per_row)
    assert out["unseen_speaker_rows"] == 6 and out["unseen_speaker_spoken_accuracy"] == 0.5
    assert out["unseen_speaker_thinking_exact"] == 1.0
    assert out["worst_variant"] == "f3" and out["worst_variant_spoken_accuracy"] == 0.5
    assert out["spoken_accuracy_by_variant"] == {"f3": 0.5, "m1": 1.0}
