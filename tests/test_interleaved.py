"""Interleaved decoding (TtT's order): text, then a spoken span by diffusion, then text that reads it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from diffuspeech.model import SpeechDiffusionModel
from diffuspeech.pipeline import Pipeline
from diffuspeech.sampling.autoregressive import ARDecodeOptions, ar_decode
from diffuspeech.training.trainer import train

CHAR_TOKENIZER = Path(__file__).resolve().parent.parent / "configs" / "tiny" / "char_tokenizer.json"
LETTERS = "abcdef"

pytestmark = pytest.mark.usefixtures("one_thread")


def talk_config(manifest):
    """Task 'talk': a word -> its copy as text, one speech unit per letter, then the word's length as text
    (the last text must read the spoken span to know when it ended)."""
    return {
        "vocab": {"text_tokenizer": str(CHAR_TOKENIZER), "num_units": 8},
        "backbone": {"name": "llada", "preset": "tiny", "d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4,
                     "mlp_hidden_size": 128, "vocab_size": 120, "max_sequence_length": 40},
        "scheduler": "linear",
        "attention": "hybrid",
        "objective": {"name": "hybrid"},
        "generation": {"mode": "interleaved", "steps": 4, "block_length": 2},
        "tasks": {"talk": {"token": "<|t2t|>", "segments": [
            {"field": "src", "modality": "text", "role": "condition"},
            {"field": "dst", "modality": "text", "role": "target", "max_len": 3},
            {"field": "units", "modality": "speech", "role": "target", "max_len": 3},
            {"field": "count", "modality": "text", "role": "target", "max_len": 1}]}},
        "data": {"manifest": str(manifest), "batch_size": 32, "bucket_batches": 1},
        "train": {"seed": 0, "progress": False, "tensorboard": False, "log_every": 10, "checkpoint_every": 1000,
                  "eval_times": [0.5], "weight_decay": 0.0,
                  "stages": [{"name": "main", "steps": 150, "lr": 3e-3, "warmup_steps": 5, "mixture": {"talk": 1}}]},
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    rng = random.Random(0)
    rows = []
    for i in range(240):
        w = "".join(rng.choice(LETTERS) for _ in range(rng.randint(1, 3)))
        rows.append({"id": f"t{i}", "split": "dev" if i % 10 == 9 else "train", "src": w, "dst": w,
                     "units": [LETTERS.index(c) for c in w], "count": str(len(w))})
    root = tmp_path_factory.mktemp("talk")
    manifest = root / "talk.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = train(talk_config(manifest), out=root / "run")
    return Pipeline(SpeechDiffusionModel.load(result.model_dir)), [r for r in rows if r["split"] == "dev"]


def test_interleaved_decodes_segments_in_reading_order(trained):
    pipe, dev = trained
    outs = pipe.run_batch("talk", [{"src": r["src"]} for r in dev], record_trajectory=True)
    assert all(not o.warnings for o in outs)
    ok = sum(o.fields["dst"] == r["dst"] and o.fields["units"].tolist() == r["units"] for o, r in zip(outs, dev))
    assert ok >= 0.3 * len(dev), ok
    spec, batch = pipe.canvas("talk", [pipe.prepare_inputs(pipe.task("talk"), {"src": dev[0]["src"]}, "x")[0]],
                              pipe.target_lengths("talk", pipe.task("talk"), pipe.defaults))
    seg = batch["segment"][0]
    o = outs[0]
    traj = o.trajectory
    dst, units, count = (traj[seg[: len(traj)] == s] for s in (0, 1, 2))
    # the text before the spoken span is done first, the count after it (it reads the finished speech)
    assert dst.max() < units[units >= 0].min() and units.max() < count.min()


def test_text_phases_match_the_autoregressive_decoder(trained):
    pipe, dev = trained
    task = pipe.task("talk")
    example = pipe.prepare_inputs(task, {"src": dev[1]["src"]}, "x")[0]
    out = pipe.run("talk", {"src": dev[1]["src"]})
    spec, batch = pipe.canvas("talk", [example], pipe.target_lengths("talk", task, pipe.defaults))
    seg = batch["segment"]
    final = torch.full_like(spec.tokens, -1)
    final[batch["valid"]] = out.tokens
    # replay the last text phase with the AR decoder on the canvas as it stood before it: identical
    before = torch.where(seg == 2, spec.mask_id, final)
    import dataclasses

    replay = ar_decode(pipe.model.backbone, dataclasses.replace(spec, tokens=before), ARDecodeOptions(seed=0), only=seg == 2)
    assert torch.equal(replay.tokens, final)
    hybrid = pipe.run("talk", {"src": dev[1]["src"]}, mode="hybrid")
    assert hybrid.fields["dst"] == out.fields["dst"]  # the first text phase is the same in both orders
