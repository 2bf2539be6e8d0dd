"""train-vocoder: learns, checkpoints atomically in safe formats, resumes, writes samples, rejects bad data."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from diffuspeech import build_component
from diffuspeech.audio import write_audio
from diffuspeech.cli import main
from diffuspeech.plugins.vocoders.unit_hifigan.arch import preset
from diffuspeech.plugins.vocoders.unit_hifigan.train import (
    SegmentSampler,
    VocoderTrainConfig,
    VocoderTrainer,
    VocoderTrainingError,
    read_training_pairs,
)

HOP = 640
SMALL_ARCH = ["--arch", "upsample_initial_channel=16", "--arch", "resblock_kernel_sizes=[3]",
              "--arch", "resblock_dilation_sizes=[[1,3,5]]"]


def tone_units(i: int, frames: int) -> tuple[torch.Tensor, list[int]]:
    """A two-tone utterance whose unit is the active tone (0/1) plus a per-file offset."""
    which = (torch.arange(frames) // 3) % 2  # switch tone every 3 frames
    freq = torch.where(which.repeat_interleave(HOP) == 0, torch.tensor(300.0 + 50 * i), torch.tensor(900.0))
    wav = 0.4 * torch.sin(2 * torch.pi * torch.cumsum(freq, 0) / 16000)
    return wav, (which + 2 * (i % 2)).tolist()


@pytest.fixture
def manifest(tmp_path):
    lines = []
    for i in range(3):
        wav, units = tone_units(i, 12)
        write_audio(tmp_path / f"u{i}.wav", wav, 16000)
        lines.append(json.dumps({"id": f"u{i}", "audio": f"u{i}.wav", "units": units}))
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def train_cli(manifest, out, *extra: str) -> int:
    return main([
        "train-vocoder", "--manifest", str(manifest), "--out", str(out), "--num-units", "4", "--batch-size", "2",
        "--segment-frames", "4", "--log-every", "1", "--no-progress", *SMALL_ARCH, *extra,
    ])


def test_cli_trains_checkpoints_samples_and_resumes(manifest, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(manifest, out, "--steps", "2", "--save-every", "1", "--sample-every", "2") == 0
    ckpt = out / "checkpoint"
    assert json.loads((ckpt / "state.json").read_text())["step"] == 2
    assert not (out / "checkpoint.tmp").exists() and not (out / "checkpoint.old").exists()
    optim = torch.load(ckpt / "optimizer.pt", weights_only=True)  # tensors and plain values only
    assert set(optim) == {"g", "d"} and optim["g"]["state"]
    assert sorted(p.name for p in (out / "samples" / "step_0000002").iterdir()) == ["u0.wav", "u1.wav"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    # the checkpoint folder is a vocoder the config can point at
    voc = build_component("vocoders", {"name": "unit_hifigan", "path": str(ckpt)})
    assert voc.num_units == 4 and voc.sample_rate == 16000 and voc.format == "diffuspeech"
    wav, lengths = voc.decode(torch.tensor([[0, 1, 2, 3, 3, 2]]))
    assert wav.shape == (1, 6 * HOP) and lengths.tolist() == [6 * HOP]
    before = load_file(str(ckpt / "generator.safetensors"))

    assert main(["train-vocoder", "--out", str(out), "--resume", "--steps", "3", "--no-progress"]) == 0
    assert json.loads((ckpt / "state.json").read_text())["step"] == 3
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # continued, not restarted
    after = load_file(str(ckpt / "generator.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    capsys.readouterr()
    assert main(["train-vocoder", "--out", str(out), "--resume", "--lr", "1e-3"]) == 2
    assert "--resume: ['lr'] differ" in capsys.readouterr().err


def test_new_run_refuses_existing_folder(manifest, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(manifest, out, "--steps", "1") == 0
    capsys.readouterr()
    assert train_cli(manifest, out, "--steps", "1") == 2
    assert "already holds a run" in capsys.readouterr().err


def test_mel_loss_goes_down(manifest):
    torch.manual_seed(0)
    arch = preset("tiny", num_units=4, upsample_initial_channel=16, resblock_kernel_sizes=[3],
                  resblock_dilation_sizes=[[1, 3, 5]])
    pairs = read_training_pairs(manifest, 16000, HOP, 4, progress=False)
    cfg = VocoderTrainConfig(lr=2e-3, stft_weight=0.0, segment_frames=4, batch_size=2)
    trainer = VocoderTrainer(cfg, manifest.parent / "run", arch)
    sampler = SegmentSampler(pairs, 4, HOP, seed=0)
    fixed = sampler.batch(2)
    mel = [trainer.train_step(*fixed)["G_l1_spec_loss"] for _ in range(25)]
    assert sum(mel[-5:]) / 5 < 0.8 * sum(mel[:5]) / 5, mel


def test_gan_and_duration_losses_run(manifest, tmp_path):
    arch = preset("tiny", num_units=4, upsample_initial_channel=16, resblock_kernel_sizes=[3],
                  resblock_dilation_sizes=[[1, 3, 5]], duration_predictor="speechbrain", var_pred_hidden_dim=8)
    pairs = read_training_pairs(manifest, 16000, HOP, 4, progress=False)
    cfg = VocoderTrainConfig(gan="mpd", mpd_periods=[3], segment_frames=4, batch_size=1, stft_weight=0.0)
    trainer = VocoderTrainer(cfg, tmp_path / "run", arch)
    d_before = [p.detach().clone() for p in trainer.discriminators.parameters()][:3]
    losses = trainer.train_step(*SegmentSampler(pairs, 4, HOP, seed=0).batch(1))
    assert {"d_loss", "G_mse_fake_loss", "G_feat_match_loss", "G_dur_loss", "G_l1_spec_loss"} <= set(losses)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(d_before, trainer.discriminators.parameters()))
    trainer.save_checkpoint()
    resumed = VocoderTrainer(cfg, tmp_path / "run", arch)
    assert resumed.load_checkpoint() == 1
    for a, b in zip(trainer.discriminators.state_dict().values(), resumed.discriminators.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_bad_training_data(tmp_path):
    wav, units = tone_units(0, 8)
    write_audio(tmp_path / "a.wav", wav, 16000)
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"audio": "a.wav"}) + "\n")
    with pytest.raises(VocoderTrainingError, match=r"m\.jsonl:1: no 'units'.*--tokenizer-config"):
        read_training_pairs(m, 16000, HOP, 4, progress=False)
    m.write_text(json.dumps({"audio": "a.wav", "units": [0, 1, 9, 2, 0, 1, 0, 1]}) + "\n")
    with pytest.raises(VocoderTrainingError, match=r"unit id 9 outside \[0, 4\)"):
        read_training_pairs(m, 16000, HOP, 4, progress=False)
    m.write_text(json.dumps({"audio": "a.wav", "units": units * 2}) + "\n")  # 50 Hz units for 25 Hz audio
    with pytest.raises(VocoderTrainingError, match="frame rate does not match"):
        read_training_pairs(m, 16000, HOP, 4, progress=False)
    m.write_text(json.dumps({"audio": "a.wav", "units": units}) + "\n")
    pairs = read_training_pairs(m, 16000, HOP, 4, progress=False)
    with pytest.raises(VocoderTrainingError, match="lower --segment-frames"):
        SegmentSampler(pairs, 32, HOP, seed=0)
