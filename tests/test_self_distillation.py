"""The self_distillation objective (VocalNet-MDM): the reverse KL to a K-step teacher falls, and only the student learns."""

from __future__ import annotations

import pytest
import torch

from diffuspeech import build_component
from diffuspeech.formats import collate, layout, parse_tasks
from diffuspeech.objective import ObjectiveContext, build_objective
from diffuspeech.vocab import Vocab, VocabConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def setup():
    vocab = Vocab(VocabConfig(text_size=40, num_units=16))
    tasks = parse_tasks(None)
    example = {"question_speech": [1, 2, 3, 4], "thinking": [5, 6, 7, 8], "answer_speech": [8, 9, 10, 11, 12], "text": [3, 4, 5]}
    batch = collate([layout(n, tasks[n], example, vocab) for n in ("s2s", "lm")], vocab.pad_id)
    student = build_component("backbones", {"name": "llada", "preset": "tiny", "vocab_size": vocab.size, "d_model": 32, "n_layers": 1,
                                            "n_heads": 2, "mlp_hidden_size": 64, "seed": 0})
    return vocab, batch, student


def test_reverse_kl_falls_and_only_the_student_learns():
    vocab, batch, student = setup()
    objective = build_objective({"name": "self_distillation", "teacher_steps": 3, "weight": 1.0, "temperature": 2.0},
                                ObjectiveContext(build_component("schedulers", "linear"), build_component("noisers", "iid"), vocab.mask_id))
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    kls = []
    for step in range(40):
        out = objective.loss(student, batch, torch.Generator().manual_seed(step % 4))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        kls.append(objective.last_rkl)
    teacher = objective.teacher
    assert teacher is not student and all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert any(p.grad is not None for p in student.parameters())
    first, last = sum(kls[:4]) / 4, sum(kls[-4:]) / 4
    assert last < 0.5 * first, (first, last)
    # the teacher stayed the frozen copy of the initial student: its weights differ from the trained student's now
    assert any(not torch.equal(a, b) for a, b in zip(teacher.parameters(), student.parameters()))


def test_refresh_makes_the_student_the_next_teacher():
    vocab, batch, student = setup()
    objective = build_objective({"name": "self_distillation", "teacher_steps": 2, "refresh_every": 2},
                                ObjectiveContext(build_component("schedulers", "linear"), build_component("noisers", "iid"), vocab.mask_id))
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    teachers = []
    for step in range(5):
        objective.loss(student, batch, torch.Generator().manual_seed(step)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        teachers.append(objective.teacher)
    assert teachers[0] is teachers[1] and teachers[2] is not teachers[1] and teachers[2] is teachers[3] and teachers[4] is not teachers[3]


def test_options_are_validated():
    from diffuspeech.compose import ConfigError

    for bad, key in [({"teacher_steps": 0}, "teacher_steps"), ({"weight": 1.5}, "weight"), ({"temperature": 0}, "temperature")]:
        with pytest.raises(ConfigError, match=rf"objective.{key}"):
            build_component("objectives", {"name": "self_distillation", **bad})


def test_vocalnet_config_trains_then_distils(tmp_path):
    """configs/vocalnet_mdm_tiny.yaml: block-causal + hierarchical masking, then a self-distillation stage from it."""
    from pathlib import Path

    from synthetic_manifest import arithmetic_rows, write_manifest

    from diffuspeech.cli import main
    from diffuspeech.model import SpeechDiffusionModel

    config = str(Path(__file__).resolve().parents[1] / "configs" / "vocalnet_mdm_tiny.yaml")
    manifest = write_manifest(tmp_path / "train.jsonl", arithmetic_rows(24))
    common = [f"data.manifest={manifest}", "data.batch_size=4", "train.progress=false", "train.tensorboard=false"]
    assert main(["train", config, *common, "train.stages.0.steps=3", "--out", str(tmp_path / "mdm")]) == 0
    assert main(["train", config, *common, "train.stages.0.steps=2", f"train.init_from={tmp_path / 'mdm' / 'model'}",
                 "objective={name: self_distillation, teacher_steps: 4, refresh_every: 1}", "--out", str(tmp_path / "sd")]) == 0
    model = SpeechDiffusionModel.load(tmp_path / "sd" / "model")
    assert model.config.objective.name == "self_distillation" and model.config.attention.align == "target"
