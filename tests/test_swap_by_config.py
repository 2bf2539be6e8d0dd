"""Swap anything by config: node replacement, nested component nodes, build-time compatibility
checks, provenance of nested components, and the CLI conveniences around them."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from diffuspeech import MaskScheduler, Vocoder, build_component, hookimpl, validate_units
from diffuspeech.cli import build_parser, main
from diffuspeech.component import component_field
from diffuspeech.compose import ConfigError, ConfigWarning, apply_overrides, load_config, validate_config
from diffuspeech.model import SpeechDiffusionModel, registered_model_dir
from diffuspeech.pipeline import Pipeline
from diffuspeech.registry import Registry

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


class Sqrt(MaskScheduler):
    @dataclass
    class Config:
        eps: float = 0.0  # added to t before the square root

    def mask_prob(self, t, modality="text"):
        return torch.sqrt(torch.as_tensor(t, dtype=torch.float32).clamp(0, 1) * (1 - self.config.eps) + self.config.eps * 0)


class Blend(MaskScheduler):
    """A third-party composite: its `inner` setting is a component node."""

    @dataclass
    class Config:
        inner: Any = component_field("schedulers", "linear")  # the schedule to follow
        weight: float = 1.0  # 1 = exactly inner

    def __init__(self, config=None):
        super().__init__(config)
        self.inner = build_component("schedulers", self.config.inner, "scheduler.inner")

    def mask_prob(self, t, modality="text"):
        return self.inner.mask_prob(t, modality)


class Tone(Vocoder):
    @dataclass
    class Config:
        num_units: int = 500  # accepted ids [0, num_units)
        sample_rate: int = 16000  # output Hz

    frame_rate = 25.0

    def __init__(self, config=None):
        super().__init__(config)
        self.num_units, self.sample_rate = self.config.num_units, self.config.sample_rate

    def decode(self, units, lengths=None):
        units, lengths = validate_units(units, lengths, self.num_units, who="tone")
        hop = int(self.sample_rate / self.frame_rate)
        t = torch.arange(hop) / self.sample_rate
        wav = torch.sin(2 * torch.pi * (100.0 + units.float())[..., None] * t).reshape(units.shape[0], -1)
        return 0.1 * wav, lengths * hop


class Plugin:
    @hookimpl
    def register_schedulers(self, register):
        register("sqrt", Sqrt)
        register("blend", Blend)

    @hookimpl
    def register_vocoders(self, register):
        register("tone", Tone)


@pytest.fixture
def plugged(fresh_registry):
    assert fresh_registry.add_plugin(Plugin(), name="swap-test", package="swap-test", version="2.0"), fresh_registry.failures
    return fresh_registry


def example(*overrides):
    return load_config(os.path.join(CONFIGS, "example.yaml"), list(overrides))


# 1. nested component nodes take every setting of their own component
def test_nested_schedule_settings_are_validated_against_their_own_component(plugged):
    cfg = example("scheduler.speech.name=sqrt", "scheduler.speech.eps=0.25")
    validate_config(cfg)
    model = SpeechDiffusionModel(cfg, base_dir=CONFIGS)
    assert model.scheduler.speech.config.eps == 0.25
    validate_config(example("scheduler.speech.name=per_modality", "scheduler.speech.speech_delay=0.3"))  # a built-in nested key
    with pytest.raises(ConfigError, match=r"scheduler\.speech\.epz: unknown key for schedulers 'sqrt'; valid keys: eps"):
        validate_config(example("scheduler.speech.name=sqrt", "scheduler.speech.epz=0.1"))
    blend = build_component("schedulers", {"name": "blend", "inner": {"name": "sqrt", "eps": 0.5}})
    assert isinstance(blend.inner, Sqrt) and blend.inner.config.eps == 0.5
    with pytest.raises(ConfigError, match=r"scheduler\.inner\.name: unknown scheduler name 'sqr'.*Did you mean 'sqrt'"):
        build_component("schedulers", {"name": "blend", "inner": {"name": "sqr"}}, "scheduler")


# 2 + 3. replacing a node drops the old component's settings; changing the name alone keeps what fits
def test_node_replacement_and_name_change(plugged):
    cfg = load_config(registered_model_dir("arith") / "config.yaml", ["vocoder={name: tone, num_units: 759}"])
    assert dict(cfg.vocoder) == {"name": "tone", "num_units": 759}
    cfg = load_config(registered_model_dir("arith") / "config.yaml", ["vocoder=tone", "vocoder.num_units=759"])
    assert dict(cfg.vocoder) == {"name": "tone", "num_units": 759}
    with pytest.warns(ConfigWarning, match=r"vocoder.name=tone: dropped vocoder.path, vocoder.n_iter"):
        cfg = load_config(registered_model_dir("arith") / "config.yaml", ["vocoder.name=tone"])
    assert set(cfg.vocoder) == {"name"}
    cfg = example("scheduler.speech=sqrt")
    assert dict(cfg.scheduler.speech) == {"name": "sqrt"}


def test_embedded_model_runs_with_a_swapped_vocoder(plugged):
    pipe = Pipeline.from_pretrained("arith", ["vocoder={name: tone, num_units: 759}"])
    out = pipe.run("tts", {"answer_words": "seven"})
    assert isinstance(pipe.model.vocoder, Tone) and out.audio["answer_speech"].numel() > 0


# 4. incompatible components are named when the model is built, before any generation
def test_incompatible_vocoder_is_refused_at_build_time(plugged):
    with pytest.raises(ConfigError, match=r"vocoder Tone decodes 500 units but the model's vocabulary has vocab.num_units=759"):
        Pipeline.from_pretrained("arith", ["vocoder={name: tone, num_units: 500}"])
    with pytest.raises(ConfigError, match=r"tokenizer makes 25 units/s but vocoder UnitHifiganVocoder expects 50 units/s"):
        SpeechDiffusionModel.load(
            registered_model_dir("arith"),
            ["vocoder={name: unit_hifigan, preset: tiny, num_units: 759, arch: {upsample_factors: [10, 8, 4], upsample_kernel_sizes: [20, 16, 8]}}"],
        )


# 5. nested components are recorded in provenance, and a missing provider is named with the fix
def test_nested_components_in_provenance(plugged, tmp_path):
    model = SpeechDiffusionModel(example("scheduler.speech=sqrt"), base_dir=CONFIGS)
    model.save(tmp_path / "m")
    prov = json.loads((tmp_path / "m" / "provenance.json").read_text())
    assert prov["components"]["scheduler.speech"] == {
        "kind": "schedulers", "name": "sqrt", "package": "swap-test", "version": "2.0", "plugin": "swap-test",
    }
    with Registry(load_entry_points=False).activated():  # the plugin is not installed here
        with pytest.raises(ConfigError, match=r"scheduler.speech was saved with schedulers 'sqrt' from swap-test 2.0.*Install swap-test==2.0"):
            SpeechDiffusionModel.load(tmp_path / "m")


# 6. train takes overrides anywhere on the line
def test_train_overrides_after_options():
    args = build_parser(["train", "c.yaml", "--out", "runs/x", "data.manifest=m.jsonl", "--resume", "train.seed=3"]).parse_args(
        ["train", "c.yaml", "--out", "runs/x", "data.manifest=m.jsonl", "--resume", "train.seed=3"]
    )
    assert args.config == "c.yaml" and args.out == "runs/x" and args.resume
    assert args.overrides == ["data.manifest=m.jsonl", "train.seed=3"]


# 7. a target without a length gets the default budget; one segment's override leaves the others
def test_targets_without_length_and_segment_overrides(tmp_path):
    cfg = load_config(os.path.join(CONFIGS, "example.yaml"))
    model = SpeechDiffusionModel(cfg, base_dir=CONFIGS)
    out = Pipeline(model).run("tts", {"text": "hi"}, steps=2)  # the default tts task has no max_len
    assert 0 < out.fields["speech"].numel() <= 64 + 1  # default_length, +1: the end token's slot
    with pytest.raises(ConfigError, match=r"target segment 'speech' has no length; set generation.lengths.speech=N"):
        Pipeline(model).run("tts", {"text": "hi"}, default_length=None)
    short = Pipeline(SpeechDiffusionModel(load_config(os.path.join(CONFIGS, "example.yaml"), ["generation.lengths.speech=3"]), base_dir=CONFIGS))
    assert short.run("tts", {"text": "hi"}).fields["speech"].numel() <= 3 + 1
    edited = apply_overrides(load_config(os.path.join(CONFIGS, "example.yaml")), ["tasks.tts.segments.1.max_len=5"])
    segs = list(edited.tasks.tts.segments)
    assert len(segs) == 2 and segs[0]["field"] == "text" and segs[1]["max_len"] == 5
    assert "asr" in edited.tasks  # the other default tasks stay


# 8. config validate conveniences, an explicit registry, the user's umask on written files
def test_config_validate_model_and_allow_missing(capsys):
    assert main(["config", "validate", "--model", "arith-mdm", "generation.steps=4"]) == 0
    assert "arith-mdm: OK" in capsys.readouterr().out
    tiny = os.path.join(CONFIGS, "train_tiny.yaml")
    assert main(["config", "validate", tiny]) == 2
    assert "data.manifest: a required value is not set" in capsys.readouterr().err
    assert main(["config", "validate", tiny, "--allow-missing"]) == 0
    assert "values left as ???: data.manifest" in capsys.readouterr().out


def test_build_component_with_an_explicit_registry():
    local = Registry(load_entry_points=False)
    assert local.add_plugin(Plugin(), name="local")
    schedule = build_component("schedulers", {"name": "sqrt", "eps": 0.1}, registry=local)
    assert isinstance(schedule, Sqrt)
    with pytest.raises(ConfigError, match="unknown scheduler name 'sqrt'"):
        build_component("schedulers", "sqrt")  # the process-wide registry does not have it
    with local.activated():
        assert isinstance(build_component("schedulers", "sqrt"), Sqrt)


def test_written_files_follow_the_umask(tmp_path):
    from diffuspeech.audio import write_audio

    old = os.umask(0o022)
    try:
        path = write_audio(tmp_path / "a.wav", torch.zeros(160), 16000)
        model = SpeechDiffusionModel(example(), base_dir=CONFIGS).save(tmp_path / "model")
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert oct(model.stat().st_mode & 0o777) == oct(0o755)
    assert oct((model / "model.safetensors").stat().st_mode & 0o777) == oct(0o644)


def test_every_component_of_the_embedded_model_swaps_with_one_override(plugged, capsys):
    """Runs, or names the incompatibility before generating (never a traceback)."""
    ok = ["vocoder={name: tone, num_units: 759}", "scheduler=linear", "scheduler.speech=sqrt", "sampler=margin", "sampler=entropy",
          "noiser=iid", "objective=diffusion", "attention=causal", "attention=bidirectional"]
    for override in ok:
        assert main(["generate", "--task", "tts", "--text", "seven", "--out-dir", "/tmp/ds-swap", override]) == 0, override
    for override, named in [("backbone.n_layers=3", "the weights do not match"), ("vocoder={name: tone}", "vocoder Tone decodes 500 units"),
                            ("backbone={name: hf_decoder}", "the weights do not match")]:
        capsys.readouterr()
        code = main(["generate", "--task", "tts", "--text", "seven", "--out-dir", "/tmp/ds-swap", override])
        err = capsys.readouterr().err
        assert code == 2 and named in err and "Traceback" not in err, (override, err)


def test_sampler_contract_documents_stats():
    from diffuspeech.sampler import STATS, Sampler

    assert STATS == ("margin", "entropy") and Sampler.needs_stats == ()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("margin", "entropy"):
            assert build_component("samplers", name).needs_stats == (name,)
