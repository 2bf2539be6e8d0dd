"""Training checkpoints: exact round trip of weights, AdamW state and RNGs; publishing and pruning."""

import json
import random

import numpy as np
import pytest
import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict, set_optimizer_state_dict

from diffuspeech.training import checkpoint as ck


def trained():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    for _ in range(3):
        model(torch.randn(5, 4)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def full(model, opt):
    return get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))


def test_round_trip_continues_identically(tmp_path):
    model, opt = trained()
    state = ck.TrainState(stage=1, step=3, global_step=9, data={"pool_index": 2, "batch_in_pool": 1, "cursors": {"asr": [0, 5]}})
    torch.manual_seed(123), random.seed(5), np.random.seed(7)
    path = ck.save_checkpoint(tmp_path, state, model.state_dict(), full(model, opt))
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(0), random.seed(0), np.random.seed(0)

    loaded = ck.load_checkpoint(path)
    assert loaded.state == state
    model2, opt2 = trained()
    with torch.no_grad():
        for p in model2.parameters():
            p.add_(1.0)  # make sure the load overwrites
    model2.load_state_dict(loaded.model)
    fresh = torch.optim.AdamW(model2.parameters(), lr=5.0)
    set_optimizer_state_dict(model2, fresh, loaded.optimizer, options=StateDictOptions(full_state_dict=True))
    ck.restore_rng(loaded.rng["tensors"], loaded.rng["meta"])
    assert (torch.rand(3).tolist(), random.random(), np.random.rand()) == (expected[0].tolist(), expected[1], expected[2])
    assert tuple(fresh.param_groups[0]["betas"]) == (0.9, 0.95) and fresh.param_groups[0]["lr"] == 1e-2
    # one more identical step on both
    x = torch.randn(5, 4)
    for m, o in ((model, opt), (model2, fresh)):
        m(x).square().mean().backward()
        o.step()
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


def test_latest_pointer_pruning_and_fallback(tmp_path):
    model, opt = trained()
    for step in (2, 4, 6):
        ck.save_checkpoint(tmp_path, ck.TrainState(global_step=step), model.state_dict(), None, keep=2)
    root = tmp_path / ck.CHECKPOINTS
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000004", "step_00000006"]
    assert json.loads((root / ck.LATEST).read_text())["dir"] == "step_00000006"
    assert ck.latest_checkpoint(tmp_path).name == "step_00000006"
    (root / ck.LATEST).write_text("{torn")  # a broken pointer: fall back to the newest complete folder
    (root / "step_00000008").mkdir()  # incomplete: no trainer.json
    assert ck.latest_checkpoint(tmp_path).name == "step_00000006"
    assert ck.load_checkpoint(root / "step_00000004").optimizer is None
    with pytest.raises(ck.CheckpointError, match="not a complete training checkpoint"):
        ck.load_checkpoint(root / "step_00000008")


def test_a_failed_write_publishes_nothing(tmp_path, monkeypatch):
    model, opt = trained()
    ck.save_checkpoint(tmp_path, ck.TrainState(global_step=1), model.state_dict(), full(model, opt))

    def broken(path, tensors, metadata=None):
        path.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ck, "_write_tensors", broken)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(tmp_path, ck.TrainState(global_step=2), model.state_dict(), full(model, opt))
    root = tmp_path / ck.CHECKPOINTS
    assert ck.latest_checkpoint(tmp_path).name == "step_00000001"
    assert sorted(p.name for p in root.iterdir()) == [ck.LATEST, "step_00000001"]
