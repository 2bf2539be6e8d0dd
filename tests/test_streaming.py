"""Streaming output: chunks as speech blocks finish, joined without gaps, first-chunk latency on the CLI."""

from __future__ import annotations

import json

import torch

from diffuspeech import Pipeline
from diffuspeech.cli import main


def test_stream_yields_audio_chunks_that_join_into_the_answer():
    pipe = Pipeline.from_pretrained("arith-mdm")
    chunks = list(pipe.stream("tts", {"answer_words": "seventeen"}, block_length=8, steps=16))
    kinds = [c.kind for c in chunks]
    assert kinds[-1] == "done" and kinds.count("audio") >= 2  # several blocks: several chunks before the end
    audio = [c for c in chunks if c.kind == "audio"]
    times = [c.elapsed_s for c in audio]
    assert times == sorted(times) and audio[0].elapsed_s < chunks[-1].elapsed_s  # the first chunk comes before the end
    out = chunks[-1].value
    joined = torch.cat([c.value for c in audio])
    assert joined.numel() == out.audio["answer_speech"].numel()  # no gap, no overlap
    units = torch.cat([c.units for c in audio])
    assert torch.equal(units, out.fields["answer_speech"])  # the chunks carry exactly the answer's units, in order


def test_stream_sends_text_targets_whole():
    pipe = Pipeline.from_pretrained("arith")
    chunks = list(pipe.stream("t2t", {"question_text": "what is two plus three"}))
    done = chunks[-1].value
    texts = {c.field: c.value for c in chunks if c.kind == "text"}
    assert set(texts) == {"thinking", "answer_text"}
    for field, value in texts.items():
        assert done.fields[field] == value


def test_generate_stream_writes_chunks_and_reports_latency(tmp_path, capsys):
    assert main(["generate", "--task", "tts", "--text", "twelve", "--model", "arith-mdm", "--stream", "--out-dir", str(tmp_path),
                 "generation.block_length=8"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["first_chunk_s"] is not None and record["first_chunk_s"] <= record["total_s"]
    assert len(record["chunks"]) >= 2 and all((tmp_path / c["audio"].split("/")[-1]).is_file() for c in record["chunks"])
    assert record["audio"].endswith("tts_0000.wav")


def test_stream_bench_reports_latency_ratios(capsys):
    assert main(["bench", "stream", "--json", "--limit", "2", "--steps-per-block", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answers"] == 2 and out["baseline_first_chunk_ms"] > 0
    assert out["spb1_first_chunk_ms"] > 0 and out["spb1_speed_vs_baseline"] > 0 and "spb1_first_chunk_vs_baseline" in out
