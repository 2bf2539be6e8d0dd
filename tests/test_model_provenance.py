"""Saving a composed model records provenance; loading recomposes from it."""

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from diffuspeech import Backbone, ConfigError, hookimpl
from diffuspeech.errors import ModelError
from diffuspeech.model import SpeechDiffusionModel


class Bag(Backbone):
    """Embedding-bag backbone: just enough of a Backbone to carry weights."""

    @dataclass
    class Config:
        vocab_size: int = 64  # ids
        hidden: int = 8  # width

    def __init__(self, config=None):
        super().__init__(config)
        self.embed = nn.Embedding(self.config.vocab_size, self.config.hidden)
        self.head = nn.Linear(self.config.hidden, self.config.vocab_size, bias=False)

    vocab_size = property(lambda self: self.config.vocab_size)
    hidden_size = property(lambda self: self.config.hidden)
    max_seq_len = property(lambda self: 128)

    def hidden_states(self, input_ids, attention_mask=None):
        return self.embed(input_ids)

    def output_head(self):
        return self.head

    def resize_vocab(self, new_size, init="mean"):
        raise NotImplementedError


class BagPlugin:
    @hookimpl
    def register_backbones(self, register):
        register("bag", Bag)


CFG = {
    "vocab": {"text_size": 20, "num_units": 10},
    "backbone": {"name": "bag", "vocab_size": 42},
    "scheduler": {"name": "per_modality", "speech": {"name": "linear"}},
}


@pytest.fixture
def registry(fresh_registry):
    assert fresh_registry.add_plugin(BagPlugin(), name="bag-plugin")
    return fresh_registry


def test_save_and_load_roundtrip(registry, tmp_path):
    torch.manual_seed(0)
    model = SpeechDiffusionModel(CFG)
    assert model.vocab.size == 20 + 12 + 10
    out = model.save(tmp_path / "m")
    assert sorted(p.name for p in out.iterdir()) == ["assets", "config.yaml", "model.safetensors", "provenance.json"]
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["components"]["backbone"] == {
        "kind": "backbones", "name": "bag", "package": "<local>", "version": "", "plugin": "bag-plugin",
    }
    assert prov["components"]["scheduler"]["package"] == "diffuspeech"
    loaded = SpeechDiffusionModel.load(out)
    assert torch.equal(loaded.backbone.embed.weight, model.backbone.embed.weight)
    assert type(loaded.scheduler.speech).__name__ == "LinearSchedule"
    # saving again over the same folder replaces it atomically
    model.save(out)
    assert not list(tmp_path.glob(".m.*"))


def test_missing_plugin_and_version_mismatch(registry, tmp_path):
    out = SpeechDiffusionModel(CFG).save(tmp_path / "m")
    prov_path = out / "provenance.json"
    prov = json.loads(prov_path.read_text())
    prov["components"]["scheduler"]["version"] = "9.9.9"
    prov_path.write_text(json.dumps(prov))
    with pytest.raises(ConfigError, match=r"scheduler 'per_modality' was saved with diffuspeech 9\.9\.9, installed is"):
        SpeechDiffusionModel.load(out)
    SpeechDiffusionModel.load(out, allow_version_mismatch=True)
    prov["components"]["backbone"]["name"] = "gone"
    prov_path.write_text(json.dumps(prov))
    with pytest.raises(ConfigError, match=r"backbone was saved with backbones 'gone' from <local> .*not available now"):
        SpeechDiffusionModel.load(out, allow_version_mismatch=True)


def test_weights_mismatch_is_reported(registry, tmp_path):
    out = SpeechDiffusionModel(CFG).save(tmp_path / "m")
    with pytest.raises(ModelError, match=r"the weights do not match the composed model .*shape of backbone\.embed\.weight: saved"):
        SpeechDiffusionModel.load(out, overrides=["backbone.vocab_size=50"])
    (out / "model.safetensors").write_bytes(b"\x10\x00")  # truncated
    with pytest.raises(ModelError, match=r"model.safetensors: not a readable safetensors file"):
        SpeechDiffusionModel.load(out)


def test_assets_are_copied_and_paths_made_relative(registry, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    cfg = {**CFG, "vocab": {"text_tokenizer": str(tmp_path / "tokenizer.json"), "num_units": 10}}
    out = SpeechDiffusionModel(cfg).save(tmp_path / "m")
    (tmp_path / "tokenizer.json").unlink()
    assert "text_tokenizer: assets/tokenizer.json" in (out / "config.yaml").read_text()
    loaded = SpeechDiffusionModel.load(out)
    assert loaded.vocab.encode_text("b a") == [1, 0]
