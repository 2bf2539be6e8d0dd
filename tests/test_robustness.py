"""Nothing a user can type crashes with a traceback or is silently accepted: bad config values,
broken model folders, hostile paths, concurrent trainings, truncated checkpoints, a full disk.

Every case asserts the exit code, that no traceback was printed, and the key or file named."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_manifest import arithmetic_rows, write_manifest

from diffuspeech.cli import main
from diffuspeech.model import registered_model_dir
from diffuspeech.training import checkpoint as ckpt_mod

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TINY = str(CONFIGS / "train_tiny.yaml")

pytestmark = pytest.mark.usefixtures("one_thread")


def run_cli(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


# --------------------------------------------------------------------------- bad values in config validate
BAD_VALUES = [
    ("train.stages.0.stpes=3", "train.stages.0.stpes: unknown key"),
    ("train.stages.0.steps=0", "train.stages.0.steps"),
    ("train.stages.1.steps=-4", "train.stages.1.steps"),
    ("train.stages.0.lr=-1e-3", "train.stages.0.lr"),
    ("train.stages.x.lr=1", "override 'train.stages.x.lr=1'"),
    ("train..seed=1", "no empty key between dots"),
    ("data.batch_size=0", "data.batch_size"),
    ("train.grad_accum=3", "does not split into train.grad_accum=3"),
    ("data.max_length=-5", "data.max_length"),
    ("tasks.tts.segments.1.max_len=-3", "tasks.tts.segments.1.max_len"),
    ("vocab.mask=5", "vocab.mask: id 5 is an ordinary text id"),
    ("vocab.pad=120", "vocab.pad: id 120 is speech unit 12"),
    ("vocab.pad=<mask>", "vocab.mask and vocab.pad are the same id"),
    ("vocab.unit_offset=50", "vocab.unit_offset"),
    ("backbone.dtype=float13", "backbone.dtype: unknown dtype 'float13'"),
    ("backbone.n_heads=3", "must be divisible by n_heads"),
    ("backbone.vocab_size=100", "backbone.vocab_size: 100 embedding rows"),
    ("train.device=cuda", "train.device: 'cuda' but no CUDA GPU"),
    ("train.keep_checkpoints=-1", "train.keep_checkpoints"),
    ("tasks.asr.segments.1.role=condition", "tasks.asr: no segment has role: target"),
    ("tasks.asr.token=<|nope|>", "tasks.asr.token: '<|nope|>' is not a special token"),
    ("train.stages.0.mixture={nope: 1}", "train.stages.0.mixture: unknown task(s) ['nope']"),
    ("train.stages.0.mixture={asr: -1}", "train.stages.0.mixture: weights must be >= 0"),
    ("generation.steps=-3", "generation.steps must be a positive integer"),
    ("generation.block_length=0", "generation.block_length"),
    ("generation.kv_cache=dual", "generation.kv_cache='dual'"),
    ("generation.temperature=-1", "generation.temperature must be >= 0"),
    ("generation.mode=greedy", "generation.mode: 'greedy'"),
    ("sampler={name: threshold, threshold: 2}", "sampler.threshold must be in [0, 1]"),
    ("attention={name: block_causal, block_size: 0}", "attention.block_size must be >= 1"),
    ("scheduler.speech_delay=1.5", "scheduler.speech_delay must be in [0, 1)"),
    ("objective={name: diffusion, eps: 2}", "objective.eps"),
    ("backbone.max_sequence_length=8", "data.max_length: 256 is longer than the backbone's 8 positions"),
    ("data.max_length=512", "data.max_length: 512 is longer than the backbone's 256 positions"),
]


@pytest.mark.parametrize("override,named", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_config_validate_rejects_bad_values(capsys, override, named):
    code, err = run_cli(capsys, "config", "validate", TINY, "data.manifest=x.jsonl", override)
    assert code == 2 and named in err, err


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_manifest(tmp_path_factory.mktemp("data") / "train.jsonl", arithmetic_rows(24))


FAST = ["data.batch_size=4", "data.bucket_batches=2", "train.stages.0.steps=3", "train.stages.1.steps=2", "train.checkpoint_every=2",
        "train.progress=false", "train.tensorboard=false", "train.log_every=1"]


@pytest.mark.parametrize("override,named", [b for b in BAD_VALUES if b[0].startswith(("train.", "data.", "vocab.mask"))][:8])
def test_train_rejects_the_same_values_before_training(capsys, manifest, tmp_path, override, named):
    code, err = run_cli(capsys, "train", TINY, f"data.manifest={manifest}", *FAST, override, "--out", str(tmp_path / "run"))
    assert code == 2 and named in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()


# --------------------------------------------------------------------------- broken model folders
@pytest.fixture
def model_copy(tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(registered_model_dir("arith"), dst)
    return dst


def _generate(capsys, model, *extra):
    return run_cli(capsys, "generate", "--task", "tts", "--text", "seven", "--model", str(model), "--out-dir", str(model.parent / "out"), *extra)


@pytest.mark.parametrize("damage,named", [
    ("truncated-weights", "model.safetensors: not a readable safetensors file"),
    ("zero-byte-weights", "model.safetensors: not a readable safetensors file"),
    ("absurd-header", "model.safetensors: not a readable safetensors file"),
    ("no-config", "missing config.yaml"),
    ("bad-provenance-json", "provenance.json: not a readable provenance record"),
    ("provenance-without-kind", "components.backbone needs string kind"),
    ("provenance-not-a-mapping", "provenance.json: no 'components' mapping"),
    ("wrong-shape-weights", "the weights do not match the composed model"),
    ("not-a-folder", "no such model folder"),
])
def test_broken_model_folders_are_named(capsys, model_copy, damage, named):
    weights, prov = model_copy / "model.safetensors", model_copy / "provenance.json"
    if damage == "truncated-weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "zero-byte-weights":
        weights.write_bytes(b"")
    elif damage == "absurd-header":
        weights.write_bytes((10**15).to_bytes(8, "little") + b"{}")
    elif damage == "no-config":
        (model_copy / "config.yaml").unlink()
    elif damage == "bad-provenance-json":
        prov.write_text("{not json")
    elif damage == "provenance-without-kind":
        data = json.loads(prov.read_text())
        del data["components"]["backbone"]["kind"]
        prov.write_text(json.dumps(data))
    elif damage == "provenance-not-a-mapping":
        prov.write_text("[]")
    elif damage == "wrong-shape-weights":
        pass
    target = model_copy if damage != "not-a-folder" else model_copy.parent / "nowhere"
    extra = ["backbone.d_model=64", "backbone.n_heads=4", "backbone.n_kv_heads=4"] if damage == "wrong-shape-weights" else []
    code, err = _generate(capsys, target, *extra)
    assert code == 2 and named in err, err


@pytest.mark.parametrize("value", ["../outside/tokenizer.json", "../../etc/passwd", "/etc/passwd"])
def test_paths_that_leave_the_model_folder_are_refused(capsys, model_copy, value):
    import yaml

    cfg = yaml.safe_load((model_copy / "config.yaml").read_text())
    cfg["vocab"]["text_tokenizer"] = value
    (model_copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    code, err = _generate(capsys, model_copy)
    assert code == 2 and f"vocab.text_tokenizer={value!r} points outside the model folder" in err and "--allow-external-paths" in err
    code, err = _generate(capsys, model_copy, "--allow-external-paths")  # trusted: the loader then reads it (and fails on it)
    assert code == 2 and "outside the model folder" not in err


# --------------------------------------------------------------------------- one training per run folder
def test_a_second_training_on_the_same_out_is_refused(capsys, manifest, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(json.dumps({"pid": holder.pid, "host": __import__("socket").gethostname(), "started": "now"}))
        code, err = run_cli(capsys, "train", TINY, f"data.manifest={manifest}", *FAST, "--out", str(out))
        assert code == 2 and f"is being trained by process {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()
    code, err = run_cli(capsys, "train", TINY, f"data.manifest={manifest}", *FAST, "--out", str(out))  # the holder is gone
    assert code == 0 and (out / "model" / "model.safetensors").is_file()
    assert not (out / ".lock").exists()  # released at the end


# --------------------------------------------------------------------------- checkpoint fallback, tolerant log
def _interrupted_run(capsys, manifest, out, monkeypatch):
    """A run killed right after its second checkpoint: checkpoints at steps 1 and 2 exist (optimizer state in both)."""
    real = ckpt_mod.save_checkpoint
    calls = []

    def save(run_dir, state, *a, **k):
        path = real(run_dir, state, *a, **k)
        calls.append(state.global_step)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(ckpt_mod, "save_checkpoint", save)
    import diffuspeech.training.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "save_checkpoint", save)
    code, _ = run_cli(capsys, "train", TINY, f"data.manifest={manifest}", *FAST, "train.checkpoint_every=1", "train.keep_checkpoints=3",
                      "--out", str(out))
    assert code == 130
    monkeypatch.setattr(ckpt_mod, "save_checkpoint", real)
    monkeypatch.setattr(trainer_mod, "save_checkpoint", real)
    return sorted((out / "checkpoints").glob("step_*"))


@pytest.mark.parametrize("damage", ["truncated-model", "truncated-optimizer", "broken-trainer-json", "missing-rng"])
def test_resume_falls_back_to_the_newest_valid_checkpoint(capsys, caplog, manifest, tmp_path, monkeypatch, damage):
    out = tmp_path / "run"
    older, newest = _interrupted_run(capsys, manifest, out, monkeypatch)
    if damage == "truncated-model":
        (newest / "model.safetensors").write_bytes((newest / "model.safetensors").read_bytes()[:500])
    elif damage == "truncated-optimizer":
        (newest / "optimizer.safetensors").write_bytes(b"\x00" * 16)
    elif damage == "broken-trainer-json":
        (newest / "trainer.json").write_text('{"format": "diffuspeech-train-checkpoint/1", "state": ')
    elif damage == "missing-rng":
        (newest / "rng.safetensors").unlink()
    with open(out / "log.jsonl", "a") as f:
        f.write('{"step": 99, "train/lo')  # a line cut short by the kill
    caplog.set_level("INFO")
    code, err = run_cli(capsys, "train", TINY, f"data.manifest={manifest}", *FAST, "--out", str(out), "--resume")
    assert code == 0, err
    assert f"skipping checkpoint {newest.name}" in caplog.text and f"resuming from {older}" in caplog.text
    assert "unreadable line" in caplog.text
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 5  # the run finished: 3 + 2 steps


# --------------------------------------------------------------------------- a full disk
def test_disk_full_during_a_checkpoint_is_one_line_and_keeps_the_last_good_one(capsys, manifest, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = ckpt_mod._write_tensors
    state = {"writes": 0}

    def write(path, tensors, metadata=None):
        state["writes"] += 1
        if state["writes"] > 3:  # the first checkpoint (model, optimizer, rng) goes through, the second fails
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, tensors, metadata)

    monkeypatch.setattr(ckpt_mod, "_write_tensors", write)
    code, err = run_cli(capsys, "train", TINY, f"data.manifest={manifest}", *FAST, "--out", str(out))
    assert code == 2 and "out of disk space" in err and "step_00000003" in err  # the stage-end checkpoint failed
    good = sorted(p.name for p in (out / "checkpoints").glob("step_*"))
    assert good == ["step_00000002"] and not list((out / "checkpoints").glob(".tmp-*"))
    assert not (out / ".lock").exists()
    monkeypatch.setattr(ckpt_mod, "_write_tensors", real)
    code, err = run_cli(capsys, "train", TINY, f"data.manifest={manifest}", *FAST, "--out", str(out), "--resume")
    assert code == 0, err


def test_debug_flag_shows_the_traceback(capsys):
    with pytest.raises(Exception, match="unknown dtype"):
        main(["--debug", "config", "validate", TINY, "data.manifest=x", "backbone.dtype=float13"])


def test_tasks_that_cannot_fit_the_backbone_are_named(capsys):
    code, err = run_cli(capsys, "config", "validate", str(CONFIGS / "example.yaml"), "backbone.max_sequence_length=8")
    assert code == 2 and "its segments need at least 9 positions (target budgets + start/end tokens) but the backbone takes 8" in err


def test_an_index_override_on_a_missing_list_is_one_line(capsys):
    code, err = run_cli(capsys, "config", "validate", str(CONFIGS / "example.yaml"), "train.stages.0.lr=1e-3")
    assert code == 2 and "config error: train:" in err


def test_generate_answers_good_inputs_and_names_bad_ones(capsys, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not audio")
    capsys.readouterr()
    code = main(["generate", "--task", "s2s", str(bad), "--out-dir", str(tmp_path / "out")])
    out = capsys.readouterr()
    assert code == 1 and "Traceback" not in out.err  # every input failed
    assert "not a readable audio file" in json.loads(out.out.strip().splitlines()[-1])["error"]
