"""The trainer end to end on configs/train_tiny.yaml: stages, logs, saved models, resume after a kill."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from synthetic_manifest import arithmetic_rows, write_manifest

from diffuspeech.cli import main
from diffuspeech.compose import ConfigError, load_config
from diffuspeech.model import SpeechDiffusionModel
from diffuspeech.training import checkpoint as ckpt_mod
from diffuspeech.training.trainer import Trainer

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: exact, reproducible float order


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_manifest(tmp_path_factory.mktemp("data") / "train.jsonl", arithmetic_rows(40))


def tiny_config(manifest, steps=(4, 3), **train):
    cfg = load_config(CONFIGS / "train_tiny.yaml", [f"data.manifest={manifest}", "data.batch_size=4", "data.bucket_batches=2"])
    for stage, n in zip(cfg.train.stages, steps):
        stage.steps = n
    cfg.train.merge_with({"log_every": 1, "checkpoint_every": 3, "progress": False, "tensorboard": False, **train})
    return cfg


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    out = {}
    for r in rows:
        if "train/loss" in r:
            assert r["step"] not in out, f"step {r['step']} logged twice"
            out[r["step"]] = r["train/loss"]
    return out


def test_tiny_config_trains_two_stages(manifest, tmp_path):
    cfg = tiny_config(manifest, steps=(6, 4), tensorboard=True)
    result = Trainer(cfg, base_dir=CONFIGS, out=tmp_path / "run").run()
    assert sorted(result.losses) == list(range(1, 11))
    assert all(v > 0 for v in result.losses.values())
    # dev loss at fixed t's at the end of each stage, per task and overall
    assert [d["step"] for d in result.dev] == [6, 10]
    assert {"dev/loss", "dev/loss_t0.5", "dev/s2s/loss_t0.5", "dev/asr/loss_t0.25"} <= set(result.dev[-1])
    assert "dev/s2s/loss_t0.5" not in result.dev[0]  # stage 1 mixes asr/tts/lm only
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    # each stage's model and the final model load back; the final one equals the last stage's
    final = SpeechDiffusionModel.load(tmp_path / "run" / "model")
    stage2 = load_file(str(tmp_path / "run" / "stages" / "stage2" / "model" / "model.safetensors"))
    stage1 = load_file(str(tmp_path / "run" / "stages" / "stage1" / "model" / "model.safetensors"))
    for k, v in final.state_dict().items():
        assert torch.equal(v, stage2[k])
    assert any(not torch.equal(stage1[k], stage2[k]) for k in stage1)  # stage 2 started from stage 1 and moved on
    assert final.vocab.size == 172


class Killed(BaseException):
    """Stands in for SIGKILL arriving in the middle of a checkpoint write."""


def kill_during(monkeypatch, step_dir: str, file: str):
    real = ckpt_mod._write_tensors

    def write(path, tensors, metadata=None):
        if step_dir in str(path.parent) and path.name == file:
            path.write_bytes(b"\x00" * 100)  # a half-written file
            raise Killed(str(path))
        real(path, tensors, metadata)

    monkeypatch.setattr(ckpt_mod, "_write_tensors", write)


def test_resume_after_kills_mid_checkpoint_matches_uninterrupted_run(manifest, tmp_path, monkeypatch):
    Trainer(tiny_config(manifest), base_dir=CONFIGS, out=tmp_path / "a").run()
    reference = losses(tmp_path / "a")
    assert sorted(reference) == list(range(1, 8))

    run = tmp_path / "b"
    # kill 1: while writing the end-of-stage-1 checkpoint (step 4): the step-3 checkpoint stays the latest
    kill_during(monkeypatch, "step_00000004", "model.safetensors")
    with pytest.raises(Killed):
        Trainer(tiny_config(manifest), base_dir=CONFIGS, out=run).run()
    assert ckpt_mod.latest_checkpoint(run).name == "step_00000003"
    assert not list((run / "checkpoints").glob(".tmp-*"))
    (run / "checkpoints" / ".tmp-step_00000005-x").mkdir()  # what a real SIGKILL would leave behind
    # kill 2: resumed mid-stage 1 (optimizer state + data position), killed writing step 6's optimizer state
    monkeypatch.undo()
    kill_during(monkeypatch, "step_00000006", "optimizer.safetensors")
    with pytest.raises(Killed):
        Trainer(tiny_config(manifest), base_dir=CONFIGS, out=run, resume=True).run()
    assert ckpt_mod.latest_checkpoint(run).name == "step_00000004"
    monkeypatch.undo()
    # without --resume the run folder is refused
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(tiny_config(manifest), base_dir=CONFIGS, out=run).run()
    Trainer(tiny_config(manifest), base_dir=CONFIGS, out=run, resume=True).run()

    assert losses(run) == reference  # bit-identical, every step logged once
    a, b = load_file(str(tmp_path / "a" / "model" / "model.safetensors")), load_file(str(run / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list((run / "checkpoints").glob(".tmp-*"))
    # resuming a finished run changes nothing
    Trainer(tiny_config(manifest), base_dir=CONFIGS, out=run, resume=True).run()
    assert losses(run) == reference


def test_train_command_and_its_errors(manifest, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    rows = arithmetic_rows(12)
    rows[3]["question_speech"] = [1, 2, 999]  # unit outside the 64-unit codebook
    write_manifest(bad, rows)
    cfg = tmp_path / "cfg.yaml"
    c = tiny_config(bad, steps=(2, 2))
    c.vocab.text_tokenizer = str(CONFIGS / "tiny" / "char_tokenizer.json")
    OmegaConf.save(c, cfg)
    assert main(["train", str(cfg), "data.on_bad_row=error", "--out", str(tmp_path / "r1")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:4 (id q3, task" in err and "999" in err and "data.on_bad_row=skip" in err
    assert main(["train", str(cfg), "data.on_bad_row=skip", "--out", str(tmp_path / "r2")]) == 0
    assert "trained model saved to" in capsys.readouterr().out
    # mandatory settings are named
    assert main(["train", str(CONFIGS / "train_tiny.yaml"), "--out", str(tmp_path / "r3")]) == 2
    assert "data.manifest" in capsys.readouterr().err


def test_gradient_checkpointing_gives_the_same_losses(manifest, tmp_path):
    plain = Trainer(tiny_config(manifest, steps=(2, 1)), base_dir=CONFIGS, out=tmp_path / "p").run()
    ckpt = Trainer(tiny_config(manifest, steps=(2, 1), gradient_checkpointing=True), base_dir=CONFIGS, out=tmp_path / "c").run()
    for k in plain.losses:
        assert ckpt.losses[k] == pytest.approx(plain.losses[k], rel=1e-5)
