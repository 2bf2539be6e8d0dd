"""Config composition errors name the full key path and the valid choices."""

import pytest
import torch

from diffuspeech import ConfigError, build_component, load_config, validate_config
from diffuspeech.cli import main


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_unknown_component_name_lists_registered_and_nearest(tmp_path):
    cfg = load_config(write(tmp_path, "scheduler:\n  name: per_modality\n  speech: {name: linaer}\n"))
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    msg = str(e.value)
    assert msg.startswith("scheduler.speech.name: unknown scheduler name 'linaer'")
    assert "registered schedulers: cosine, linear, per_modality" in msg and "Did you mean 'linear'?" in msg


def test_unknown_key_lists_valid_keys():
    expected = r"^scheduler.speech_dealy: unknown key for schedulers 'per_modality'; valid keys: speech, speech_delay, text\. Did you mean 'speech_delay'\?"
    with pytest.raises(ConfigError, match=expected):
        validate_config({"scheduler": {"name": "per_modality", "speech_dealy": 0.1}})


def test_wrong_type_names_expected_and_given():
    with pytest.raises(ConfigError, match=r"^scheduler.speech_delay: expected float, got 'soon' \(str\)$"):
        build_component("schedulers", {"name": "per_modality", "speech_delay": "soon"}, "scheduler")


def test_missing_name_and_unknown_section():
    with pytest.raises(ConfigError, match=r"^scheduler.name is missing.*registered schedulers: cosine, linear, per_modality"):
        validate_config({"scheduler": {"speech_delay": 0.2}})
    with pytest.raises(ConfigError, match=r"^schedular: unknown top-level key; valid keys: .*Did you mean 'scheduler'\?"):
        validate_config({"schedular": {"name": "cosine"}})


def test_section_dataclass_errors():
    with pytest.raises(ConfigError, match=r"^vocab.num_unit: unknown key .*Did you mean 'num_units'"):
        validate_config({"vocab": {"num_unit": 10}})
    with pytest.raises(ConfigError, match=r"^tasks.s2s.segments\[1\].role: 'answer'; valid: condition, target"):
        validate_config({"tasks": {"s2s": {"token": "<|s2s|>", "segments": [{"field": "q"}, {"field": "a", "role": "answer"}]}}})


def test_override_swaps_scheduler_and_its_behaviour(tmp_path):
    path = write(tmp_path, "scheduler:\n  name: per_modality\n  text: {name: cosine}\n  speech: {name: cosine}\n")
    t = torch.tensor([0.5])
    base = build_component("schedulers", load_config(path).scheduler)
    swapped = build_component("schedulers", load_config(path, ["scheduler.speech.name=linear"]).scheduler)
    assert type(base.speech).__name__ == "CosineSchedule" and type(swapped.speech).__name__ == "LinearSchedule"
    assert base.mask_prob(t, "speech").item() == pytest.approx(0.70710678, abs=1e-6)
    assert swapped.mask_prob(t, "speech").item() == pytest.approx(0.5)
    assert swapped.mask_prob(t, "text").item() == base.mask_prob(t, "text").item()
    # and sampling reveals speech on a different schedule
    n = torch.tensor([20])
    assert not torch.equal(base.reveal_counts(n, 4, "speech"), swapped.reveal_counts(n, 4, "speech"))


def test_cli_validate_and_show(tmp_path, capsys):
    path = write(tmp_path, "scheduler:\n  name: cosine\n")
    assert main(["config", "validate", str(path)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["config", "show", str(path), "scheduler.name=linear"]) == 0
    assert "name: linear" in capsys.readouterr().out
    assert main(["config", "validate", str(path), "scheduler.name=cosin"]) == 2
    assert "scheduler.name: unknown scheduler name 'cosin'" in capsys.readouterr().err
    assert main(["config", "validate", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_mandatory_values_must_be_set():
    cfg = load_config({"scheduler": {"name": "cosine"}, "vocab": {"text_size": "???", "num_units": "???"}})
    with pytest.raises(ConfigError, match=r"^vocab.num_units: a required value is not set .*vocab.num_units=\.\.\. \(also unset: vocab.text_size\)"):
        validate_config(cfg)
    validate_config(load_config(cfg, ["vocab.text_size=10", "vocab.num_units=4"]))
