"""The conformance kit over every registered built-in of every kind with a check.

A new built-in without an example node below fails ``test_every_builtin_has_an_example``,
so no component skips its kind's rules. The kit itself must catch broken components.
"""

from __future__ import annotations

import pytest
import torch
from tiny_whisper import write_tiny_whisper
from transformers import HubertConfig, HubertModel

from diffuspeech import MaskScheduler, Sampler, Vocoder, build_component
from diffuspeech.mel import MelConfig, log_mel
from diffuspeech.quantizers import save_centroids
from diffuspeech.registry import get_registry
from diffuspeech.testing import CHECKS, ConformanceError, check_component

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Files the built-ins that load something need: mel centroids, a tiny HuBERT folder + centroids."""
    root = tmp_path_factory.mktemp("conformance")
    frames = log_mel(0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(0)), MelConfig())  # [T, 80]
    save_centroids(root / "mel.safetensors", frames[:20], "mel_kmeans", {"mel_config": MelConfig().to_json()})
    torch.manual_seed(0)
    hubert = HubertModel(HubertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        conv_dim=(16,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    ))
    hubert.save_pretrained(root / "hubert")
    write_tiny_whisper(root / "whisper")
    save_centroids(root / "hubert_km.safetensors", torch.randn(12, 32, generator=torch.Generator().manual_seed(1)), "kmeans")
    return root


TINY_LLADA = {"name": "llada", "preset": "tiny", "d_model": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2,
              "mlp_hidden_size": 64, "vocab_size": 96, "max_sequence_length": 32, "seed": 0}


def example_nodes(assets) -> dict[str, dict[str, dict]]:
    """kind -> registered name -> a config node that builds it small."""
    return {
        "schedulers": {
            "cosine": {"name": "cosine"}, "linear": {"name": "linear"},
            "per_modality": {"name": "per_modality", "text": {"name": "cosine"}, "speech": {"name": "linear"}, "speech_delay": 0.0},
        },
        "samplers": {"low_confidence": {"name": "low_confidence"}, "random": {"name": "random"}, "threshold": {"name": "threshold"},
                     "margin": {"name": "margin"}, "entropy": {"name": "entropy"}},
        "attention": {
            "bidirectional": {"name": "bidirectional"}, "causal": {"name": "causal"}, "hybrid": {"name": "hybrid"},
            "block_causal": {"name": "block_causal", "block_size": 4},
        },
        "noisers": {"iid": {"name": "iid"}, "hierarchical_block": {"name": "hierarchical_block", "block_size": 4}},
        "vocoders": {
            "griffinlim": {"name": "griffinlim", "path": str(assets / "mel.safetensors"), "n_iter": 2},
            "unit_hifigan": {"name": "unit_hifigan", "preset": "tiny", "num_units": 20},
        },
        "tokenizers": {
            "mel_kmeans": {"name": "mel_kmeans", "path": str(assets / "mel.safetensors")},
            "hubert": {"name": "hubert", "model_path": str(assets / "hubert"), "layer": 1, "quantizer": str(assets / "hubert_km.safetensors")},
        },
        "backbones": {
            "llada": TINY_LLADA,
            "hf_decoder": {"name": "hf_decoder", "model_type": "llama", "hidden_size": 32, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "vocab_size": 96, "seed": 0},
        },
        "encoders": {
            "mel": {"name": "mel", "conv_layers": 1, "conv_width": 16},
            "whisper": {"name": "whisper", "path": str(assets / "whisper")},
        },
        "adapters": {
            "semantic": {"name": "semantic", "input_size": 16, "output_size": 24, "width": 8, "prompt_tokens": 2, "context_layers": 1, "context_heads": 2},
            "qformer": {"name": "qformer", "input_size": 16, "output_size": 24, "layers": [0, -1], "num_queries": 3, "width": 8, "heads": 2,
                        "num_layers": 1},
        },
        "objectives": {"diffusion": {"name": "diffusion"}, "autoregressive": {"name": "autoregressive"}, "hybrid": {"name": "hybrid"},
                       "self_distillation": {"name": "self_distillation", "teacher_steps": 2}},
    }


CASES = [(kind, name) for kind in CHECKS for name in get_registry().names(kind)]


def test_every_builtin_has_an_example(assets):
    nodes = example_nodes(assets)
    missing = [f"{kind}/{name}" for kind, name in CASES if name not in nodes.get(kind, {})]
    assert not missing, f"add an example node for {missing} to tests/test_conformance.py"


@pytest.mark.parametrize("kind,name", CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_builtin_conforms(assets, kind, name):
    node = example_nodes(assets)[kind][name]
    component = build_component(kind, node, kind)
    context = {"backbone": build_component("backbones", TINY_LLADA)} if kind == "objectives" else {}
    check_component(kind, component, **context)


# --------------------------------------------------------------------------- the kit catches broken components
class _ReversedSchedule(MaskScheduler):
    def mask_prob(self, t, modality="text"):
        return 1.0 - t  # gamma(0) = 1: masks everything at t = 0


class _StallingSampler(Sampler):
    def select(self, confidence, num_to_reveal, generator=None):
        return torch.zeros_like(confidence, dtype=torch.bool)  # never reveals: decoding would loop forever


class _InfSampler(Sampler):
    def select(self, confidence, num_to_reveal, generator=None):
        return torch.ones_like(confidence, dtype=torch.bool)  # reveals -inf positions too


class _LooseVocoder(Vocoder):
    sample_rate, num_units, frame_rate = 16000, 8, 25.0

    def decode(self, units, lengths=None):
        return torch.zeros(units.shape[0], units.shape[1] * 640), torch.full((units.shape[0],), units.shape[1] * 640)  # ignores lengths


@pytest.mark.parametrize("kind,component,rule", [
    ("schedulers", _ReversedSchedule(), "gamma"),
    ("samplers", _StallingSampler(), "revealed nothing"),
    ("samplers", _InfSampler(), "-inf"),
    ("vocoders", _LooseVocoder(), "follow the unit lengths"),
])
def test_kit_rejects_broken_components(kind, component, rule):
    with pytest.raises(ConformanceError, match=rule):
        check_component(kind, component)


def test_unknown_kind_is_named():
    with pytest.raises(KeyError, match="no conformance check for kind 'widgets'"):
        check_component("widgets", object())
