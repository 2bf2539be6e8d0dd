"""The hf_decoder backbone on tiny Llama / Qwen2 folders written by transformers."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from diffuspeech import build_component

SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=48, vocab_size=97, max_position_embeddings=64, rms_norm_eps=1e-5)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SHAPE, rope_theta=500000.0))
    with torch.no_grad():  # non-trivial norms so the parity check covers them
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path_factory.mktemp("hf") / "tiny-llama"
    model.save_pretrained(folder)
    return folder, model.eval()


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    torch.manual_seed(1)
    model = Qwen2ForCausalLM(Qwen2Config(**SHAPE, tie_word_embeddings=True))
    folder = tmp_path_factory.mktemp("hf") / "tiny-qwen2"
    model.save_pretrained(folder)
    return folder, model.eval()


def load(folder, **settings):
    return build_component("backbones", {"name": "hf_decoder", "path": str(folder), **settings}).eval()


def policy_mask(name: str, modality: torch.Tensor) -> torch.Tensor:
    return build_component("attention", name).mask(modality, torch.ones_like(modality, dtype=torch.bool))


@pytest.mark.parametrize("which", ["llama", "qwen2"])
def test_causal_policy_reproduces_the_models_own_forward(which, llama_dir, qwen_dir):
    folder, hf_model = llama_dir if which == "llama" else qwen_dir
    backbone = load(folder)
    ids = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(0))
    mask = policy_mask("causal", torch.zeros(2, 10, dtype=torch.long))
    with torch.no_grad():
        torch.testing.assert_close(backbone(ids, attention_mask=mask), hf_model(ids).logits, rtol=1e-5, atol=1e-5)


def test_bidirectional_llama_equals_llada_with_the_same_weights(llama_dir, tmp_path):
    """A Llama run with a full mask is the LLaDA architecture: map its weights to the official
    LLaDA names, load them with the llada backbone, and compare logits."""
    folder, hf_model = llama_dir
    names = {"self_attn.q_proj": "q_proj", "self_attn.k_proj": "k_proj", "self_attn.v_proj": "v_proj",
             "self_attn.o_proj": "attn_out", "mlp.gate_proj": "ff_proj", "mlp.up_proj": "up_proj",
             "mlp.down_proj": "ff_out", "input_layernorm": "attn_norm", "post_attention_layernorm": "ff_norm"}
    llada = {"model.transformer.wte.weight": hf_model.model.embed_tokens.weight,
             "model.transformer.ln_f.weight": hf_model.model.norm.weight,
             "model.transformer.ff_out.weight": hf_model.lm_head.weight}
    for i in range(SHAPE["num_hidden_layers"]):
        for src, dst in names.items():
            llada[f"model.transformer.blocks.{i}.{dst}.weight"] = hf_model.get_submodule(f"model.layers.{i}.{src}").weight
    out = tmp_path / "as-llada"
    out.mkdir()
    save_file({k: v.detach().contiguous() for k, v in llada.items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps({
        "model_type": "llada", "block_type": "llama", "d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
        "mlp_hidden_size": 48, "vocab_size": 97, "embedding_size": 97, "max_sequence_length": 64,
        "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "weight_tying": False, "rope": True,
        "layer_norm_type": "rms", "activation_type": "silu"}))
    as_llada = build_component("backbones", {"name": "llada", "path": str(out)}).eval()
    backbone = load(folder)
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        bidir = backbone(ids)  # attention_mask=None means full attention
        torch.testing.assert_close(bidir, as_llada(ids), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(bidir, hf_model(ids).logits, atol=1e-3)  # not the causal result


def test_hybrid_mask_controls_what_each_position_sees(qwen_dir):
    backbone = load(qwen_dir[0])
    modality = torch.tensor([[0, 0, 1, 1, 1, 0]])  # text text [speech x3] text
    mask = policy_mask("hybrid", modality)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    changed = ids.clone()
    changed[0, 4] = 50  # last token of the speech span
    with torch.no_grad():
        a, b = backbone.hidden_states(ids, mask), backbone.hidden_states(changed, mask)
    same = (a - b).abs().amax(-1)[0] < 1e-6  # [L]
    assert same.tolist() == [True, True, False, False, False, False]


def test_resize_and_state_dict_round_trip_with_tied_embeddings(qwen_dir, tmp_path):
    folder, hf_model = qwen_dir
    backbone = load(folder, extend_vocab_to=110)
    assert backbone.tied and backbone.vocab_size == 110
    emb = backbone.lm.get_input_embeddings().weight
    old = hf_model.get_input_embeddings().weight
    assert torch.equal(emb[:97], old) and torch.equal(emb[97:], old.mean(0, keepdim=True).expand(13, -1))
    state = backbone.state_dict()
    save_file(state, str(tmp_path / "bb.safetensors"))  # no shared tensors left in the state dict
    fresh = load(folder, extend_vocab_to=110, new_row_init="normal")
    fresh.load_state_dict(load_file(str(tmp_path / "bb.safetensors")))
    assert fresh.tied
    ids = torch.tensor([[1, 100, 105, 3]])
    with torch.no_grad():
        assert torch.equal(fresh(ids), backbone(ids))
        assert backbone(ids, logits_at=ids > 50).shape == (2, 110)


def test_fresh_tiny_model_and_mismatched_folder(tmp_path, llama_dir):
    fresh = build_component("backbones", {"name": "hf_decoder", "model_type": "qwen2", "seed": 0})
    assert type(fresh.lm).__name__ == "Qwen2ForCausalLM" and fresh.vocab_size == 1024
    cfg = json.loads((llama_dir[0] / "config.json").read_text())
    cfg["num_hidden_layers"] = 3  # weights hold 2 layers
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps(cfg))
    (bad / "model.safetensors").write_bytes((llama_dir[0] / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match=r"missing keys: .*layers\.2\."):
        load(bad)
    with pytest.raises(ValueError, match=r"backbone\.hidden_size=64 but config\.json says 32"):
        load(llama_dir[0], hidden_size=64)
