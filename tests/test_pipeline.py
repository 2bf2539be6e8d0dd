"""The inference pipeline and `diffuspeech generate` on a tiny randomly initialised model.

Quality is not the point here (the weights are random): these tests check the plumbing —
canvas layout, allowed ids per segment, audio written at the vocoder's rate and length,
the JSON contract of the CLI, and clear errors for bad input files.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from diffuspeech.audio import speed_perturb
from diffuspeech.cli import main
from diffuspeech.compose import ConfigError
from diffuspeech.mel import MelConfig
from diffuspeech.model import SpeechDiffusionModel
from diffuspeech.pipeline import Pipeline, PipelineOutput
from diffuspeech.quantizers import save_centroids

WORDS = ["[UNK]", "what", "is", "plus", "minus", "one", "two", "three", "1", "2", "3", "+", "-", "="]
K = 16


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(d / "tokenizer.json"))
    g = torch.Generator().manual_seed(0)
    save_centroids(d / "centroids.safetensors", torch.randn(K, 80, generator=g) - 4.0, "mel_kmeans", {"mel_config": MelConfig().to_json()})
    vocab_size = len(WORDS) + 12 + K
    cfg = {
        "vocab": {"text_tokenizer": str(d / "tokenizer.json"), "num_units": K},
        "tokenizer": {"name": "mel_kmeans", "path": str(d / "centroids.safetensors")},
        "vocoder": {"name": "griffinlim", "path": str(d / "centroids.safetensors"), "n_iter": 4},
        "backbone": {"name": "llada", "preset": "tiny", "d_model": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2,
                     "mlp_hidden_size": 64, "vocab_size": vocab_size, "max_sequence_length": 256, "seed": 0},
        "scheduler": {"name": "per_modality", "speech_delay": 0.5},
        "sampler": {"name": "low_confidence"},
        "attention": {"name": "bidirectional"},
        "tasks": {
            "s2s": {"token": "<|s2s|>", "segments": [
                {"field": "question_speech", "modality": "speech", "role": "condition", "max_len": 100},
                {"field": "thinking", "modality": "text", "role": "target", "max_len": 5},
                {"field": "answer_text", "modality": "text", "role": "target", "max_len": 2},
                {"field": "answer_speech", "modality": "speech", "role": "target", "max_len": 12}]},
            "tts": {"token": "<|tts|>", "segments": [
                {"field": "text", "modality": "text", "role": "condition"},
                {"field": "speech", "modality": "speech", "role": "target", "max_len": 10}]},
        },
        "generation": {"steps": 8},
    }
    return SpeechDiffusionModel(cfg).save(d / "model")


def tone(path, seconds=1.0, sr=22050, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * math.pi * 220 * t)
    sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, sr)
    return path


def test_pipeline_respects_segment_vocabularies(model_dir, tmp_path):
    pipe = Pipeline(SpeechDiffusionModel.load(model_dir))
    out = pipe.run("s2s", {"question_speech": str(tone(tmp_path / "q.wav"))}, record_trajectory=True)
    vocab = pipe.model.vocab
    assert isinstance(out.fields["thinking"], str) and isinstance(out.fields["answer_text"], str)
    units = out.fields["answer_speech"]
    assert units.dtype == torch.long and (units >= 0).all() and (units < K).all() and len(units) <= 12
    tokens, tgt, mod = out.tokens, out.target, out.modality
    assert not (tokens == vocab.mask_id).any()
    text_lo, text_hi = vocab.allowed_range("text")
    sp_lo, sp_hi = vocab.allowed_range("speech")
    assert ((tokens[tgt & (mod == 0)] >= text_lo) & (tokens[tgt & (mod == 0)] < text_hi)).all()
    assert ((tokens[tgt & (mod == 1)] >= sp_lo) & (tokens[tgt & (mod == 1)] < sp_hi)).all()
    assert (out.trajectory[~tgt] == -1).all() and (out.trajectory[tgt] >= 0).all()
    if len(units):
        assert out.audio["answer_speech"].shape[0] == len(units) * 640
    # speech_delay 0.5: no speech position is revealed in the first half of the steps
    assert (out.trajectory[tgt & (mod == 1)] >= 4).all()


def test_block_decoding_rounds_steps_up_to_whole_steps_per_block_for_every_task(model_dir, tmp_path, monkeypatch):
    import diffuspeech.pipeline as pipeline_module

    seen = []
    real_generate = pipeline_module.generate

    def spy(backbone, spec, options, **kw):
        seen.append((int((spec.tokens == spec.mask_id).sum(dim=1).max()), options.steps, options.block_length))
        return real_generate(backbone, spec, options, **kw)

    monkeypatch.setattr(pipeline_module, "generate", spy)
    pipe = Pipeline(SpeechDiffusionModel.load(model_dir))
    q = {"question_speech": str(tone(tmp_path / "q.wav"))}
    pipe.run("s2s", q, block_length=4, steps=7)  # one config must serve tasks of any target length
    pipe.run("tts", {"text": "two"}, block_length=4, steps=7)
    pipe.run("s2s", q, block_length=1, steps=1)  # strictly left to right: one step per target position
    pipe.run("tts", {"text": "two"}, block_length=64, steps=100)  # one block, more steps than tokens: one per token
    (n_s2s, s1, _), (n_tts, s2, _), (_, s3, b3), (_, s4, _) = seen
    for n, steps in ((n_s2s, s1), (n_tts, s2)):
        blocks = math.ceil(n / 4)
        assert steps == blocks * math.ceil(7 / blocks) and steps >= 7  # whole steps per block, rounded up
    assert (s3, b3) == (n_s2s, 1)
    assert s4 == n_tts


def test_generate_cli_contract(model_dir, tmp_path, capsys):
    a = tone(tmp_path / "a.wav")
    b = tone(tmp_path / "b.wav", sr=8000, channels=2)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    rc = main(["generate", "--task", "s2s", "--model", str(model_dir), "--out-dir", str(tmp_path / "out"), str(a), str(b), str(bad)])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["input"] for x in lines][-1] == str(bad) and "bad.wav" in lines[-1]["error"]
    ok = {x["input"]: x for x in lines if "error" not in x}
    assert set(ok) == {str(a), str(b)}
    for rec in ok.values():
        assert set(rec) >= {"input", "thinking", "text", "audio"}
        if rec["audio"] is not None:
            data, sr = sf.read(rec["audio"])
            assert sr == 16000 and len(data) % 640 == 0
            assert rec["audio"].endswith(("a.wav", "b.wav"))
    rc = main(["generate", "--task", "tts", "--model", str(model_dir), "--out-dir", str(tmp_path / "tts"), "--text", "one plus two"])
    assert rc == 0
    rec = json.loads(capsys.readouterr().out.strip())
    assert rec["input"] == "one plus two" and rec["thinking"] is None


def test_generate_cli_errors(model_dir, tmp_path, capsys):
    assert main(["generate", "--task", "s2s", "--model", str(model_dir)]) == 2
    assert "takes speech input" in capsys.readouterr().err
    assert main(["generate", "--task", "nope", "--model", str(model_dir), "x.wav"]) == 2
    assert "unknown task 'nope'; this model's tasks: s2s, tts" in capsys.readouterr().err


def test_generate_keeps_one_wav_per_input_when_names_collide(model_dir, tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a, b = tone(tmp_path / "x" / "q.wav"), tone(tmp_path / "y" / "q.wav", seconds=0.5)
    out = tmp_path / "out"
    assert main(["generate", "--task", "s2s", "--model", str(model_dir), "--out-dir", str(out), "--batch-size", "1", str(a), str(b)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    paths = [x["audio"] for x in lines]
    assert [x["input"] for x in lines] == [str(a), str(b)]
    assert paths == [str(out / "q.wav"), str(out / "q-2.wav")] and all(Path(p).is_file() for p in paths)


def test_generate_answers_silent_noisy_and_too_long_questions_with_warnings(model_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    silent, noise, long = tmp_path / "silent.wav", tmp_path / "noise.wav", tmp_path / "long.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    sf.write(noise, (0.3 * rng.standard_normal(16000)).astype(np.float32), 16000)
    sf.write(long, (0.1 * rng.standard_normal(16000 * 8)).astype(np.float32), 16000)  # 200 units > max_len 100
    out = tmp_path / "out"
    assert main(["generate", "--task", "s2s", "--model", str(model_dir), "--out-dir", str(out), str(silent), str(noise), str(long)]) == 0
    recs = {Path(x["input"]).stem: x for x in map(json.loads, capsys.readouterr().out.strip().splitlines())}
    assert set(recs) == {"silent", "noise", "long"} and all(Path(r["audio"]).is_file() for r in recs.values())
    assert any("the audio is silent" in w for w in recs["silent"]["warnings"])
    assert any("201 units is over the 100 the model was trained on; keeping the first 100" in w for w in recs["long"]["warnings"])
    assert "warnings" not in recs["noise"] or not any("silent" in w for w in recs["noise"]["warnings"])


def _fake_output(thinking, answer, passes=3):
    return PipelineOutput(task="s2s", fields={"thinking": thinking, "answer_text": answer, "answer_speech": torch.zeros(0, dtype=torch.long)},
                          audio={}, sample_rate=None, tokens=torch.zeros(1), trajectory=None, modality=torch.zeros(1),
                          target=torch.zeros(1, dtype=torch.bool), steps=2, forward_passes=passes)


def test_speed_votes_majority_rule(model_dir):
    task = SpeechDiffusionModel.load(model_dir).tasks["s2s"]
    copies = [_fake_output("1 + 2 = 4", "4"), _fake_output("1 + 2 = 3", "3"), _fake_output("1 + 2 = 3", "3")]
    copies[1].steps, copies[2].steps = 11, 22  # outside the vote: tells the copies apart
    copies[2].warnings = ["input[0]: a note"]
    chosen = Pipeline.majority(task, copies)
    assert chosen.fields["thinking"] == "1 + 2 = 3" and chosen.steps == 11  # the earliest copy of the majority
    assert chosen.forward_passes == 9 and chosen.agreement == pytest.approx(2 / 3)  # compute is summed over copies
    assert chosen.warnings == ["input[0]: a note"]  # every copy's warnings are kept
    tie = Pipeline.majority(task, [_fake_output("a", "1"), _fake_output("b", "2")])
    assert tie.fields["thinking"] == "a" and tie.agreement == 0.5  # ties go to the first rate (put 1.0 first)
    # thinking and answer vote together: same thinking with a different answer is another candidate
    split = Pipeline.majority(task, [_fake_output("x", "1"), _fake_output("x", "2"), _fake_output("x", "2")])
    assert split.fields["answer_text"] == "2"


def test_speed_votes_decode_every_input_at_every_rate(model_dir, tmp_path, monkeypatch):
    import diffuspeech.pipeline as pipeline_module

    pipe = Pipeline(SpeechDiffusionModel.load(model_dir))
    qs = [{"question_speech": str(tone(tmp_path / f"q{i}.wav", seconds=s, sr=16000))} for i, s in enumerate((0.6, 1.7))]
    rows = []
    real_generate = pipeline_module.generate

    def spy(backbone, spec, options, **kw):
        rows.append(int(spec.tokens.shape[0]))
        return real_generate(backbone, spec, options, **kw)

    monkeypatch.setattr(pipeline_module, "generate", spy)
    plain = pipe.run_batch("s2s", qs)
    same = pipe.run_batch("s2s", qs, speed_votes=[1.0, 1.0])  # two identical copies: must reproduce each input's own output
    assert [o.fields["thinking"] for o in same] == [o.fields["thinking"] for o in plain]
    assert all(torch.equal(a.tokens, b.tokens) and a.agreement == 1.0 for a, b in zip(same, plain))
    assert all(v.forward_passes == 2 * p.forward_passes for v, p in zip(same, plain))
    voted = pipe.run_batch("s2s", qs, speed_votes=[1.0, 0.8, 1.25])
    assert rows == [2, 4, 6] and len(voted) == 2  # one batch: every input x every rate
    wave = pipe.speech_waveforms(pipe.task("s2s"), qs[1], "input[1]")["question_speech"]  # [T] at the tokenizer's rate
    slow = speed_perturb(wave, 16000, 0.8)  # [~T / 0.8]: what the 0.8 copy is read from
    assert abs(slow.shape[0] - 1.7 * 16000 / 0.8) <= 2
    assert pipe.run_batch("s2s", qs[:1], speed_votes=[1.0])[0].agreement is None  # the input as spoken only = no voting
    assert pipe.run_batch("tts", [{"text": "two"}], speed_votes=[1.0, 0.9])[0].agreement is None  # no speech condition


def test_speed_votes_from_the_model_config_reach_generate(model_dir, tmp_path, capsys):
    q = tone(tmp_path / "q.wav", sr=16000)
    model = SpeechDiffusionModel.load(model_dir, overrides=["generation.speed_votes=[1.0,0.9,1.1]"])
    assert Pipeline(model).run("s2s", {"question_speech": str(q)}).agreement in (1 / 3, 2 / 3, 1.0)
    assert main(["generate", "--task", "s2s", "--model", str(model_dir), "--out-dir", str(tmp_path / "g"), str(q),
                 "generation.speed_votes=[1.0,0.9,1.1]"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["agreement"] in (1 / 3, 2 / 3, 1.0) and Path(line["audio"]).is_file()


def test_speed_votes_errors(model_dir):
    pipe = Pipeline(SpeechDiffusionModel.load(model_dir))
    units = {"question_speech": torch.tensor([1, 2, 3])}
    with pytest.raises(ConfigError, match=r"generation\.speed_votes: rates must be finite numbers > 0"):
        pipe.run_batch("s2s", [units], speed_votes=[1.0, 0.0])
    with pytest.raises(ConfigError, match=r"generation\.speed_votes: expected a list of rates"):
        pipe.run_batch("s2s", [units], speed_votes=0.9)
    with pytest.raises(ValueError, match=r"input\[0\]\.question_speech: generation\.speed_votes re-reads the audio"):
        pipe.run_batch("s2s", [units], speed_votes=[1.0, 0.9])
    prepared = [pipe.prepare_inputs(pipe.task("s2s"), units, "input[0]")]
    with pytest.raises(ConfigError, match="speed_votes apply when inputs are prepared"):
        pipe.run_prepared("s2s", prepared, speed_votes=[1.0, 0.9])
    with pytest.raises(ValueError, match="not whole groups of 2 copies"):
        pipe.run_prepared("s2s", prepared, copies=2)
