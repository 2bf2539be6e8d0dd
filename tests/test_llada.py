"""The llada backbone against an independent reference, on checkpoints in the official format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffuspeech import ConfigError, build_component
from diffuspeech.plugins.backbones.llada.checkpoint import CheckpointMismatchError

# A tiny LLaDA: 3 layers, grouped-query attention (4 query heads, 2 kv heads), head_dim 8.
TINY = dict(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, mlp_hidden_size=48, vocab=101, max_len=64)


def official_config(d_model, n_layers, n_heads, n_kv_heads, mlp_hidden_size, vocab, max_len, tying=False) -> dict:
    """The fields of GSAI-ML/LLaDA-8B-Base's config.json, with a tiny shape."""
    return {
        "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
        "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                     "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
                     "AutoModel": "modeling_llada.LLaDAModelLM"},
        "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": d_model,
        "embedding_dropout": 0.0, "embedding_size": vocab, "eos_token_id": 7, "flash_attention": False,
        "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta",
        "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False, "layer_norm_type": "rms",
        "layer_norm_with_affine": True, "mask_token_id": 100, "max_sequence_length": max_len,
        "mlp_hidden_size": mlp_hidden_size, "mlp_ratio": 4, "model_type": "llada", "multi_query_attention": None,
        "n_heads": n_heads, "n_kv_heads": n_kv_heads, "n_layers": n_layers, "pad_token_id": 7,
        "precision": "amp_bf16", "residual_dropout": 0.0, "rms_norm_eps": 1e-05, "rope": True,
        "rope_full_precision": True, "rope_theta": 500000.0, "scale_logits": False, "torch_dtype": "float32",
        "transformers_version": "4.46.3", "use_cache": False, "vocab_size": vocab, "weight_tying": tying,
    }


def official_tensors(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d, f, v = cfg["d_model"], cfg["mlp_hidden_size"], cfg["embedding_size"]
    kv = cfg["n_kv_heads"] * d // cfg["n_heads"]

    def w(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    t = {"model.transformer.wte.weight": w(v, d, scale=1.0), "model.transformer.ln_f.weight": 1 + w(d, scale=0.1)}
    for i in range(cfg["n_layers"]):
        p = f"model.transformer.blocks.{i}."
        t.update({
            p + "attn_norm.weight": 1 + w(d, scale=0.1), p + "ff_norm.weight": 1 + w(d, scale=0.1),
            p + "q_proj.weight": w(d, d), p + "k_proj.weight": w(kv, d), p + "v_proj.weight": w(kv, d),
            p + "attn_out.weight": w(d, d), p + "ff_proj.weight": w(f, d), p + "up_proj.weight": w(f, d),
            p + "ff_out.weight": w(d, f),
        })
    if not cfg["weight_tying"]:
        t["model.transformer.ff_out.weight"] = w(v, d)
    return t


def write_official(folder: Path, cfg: dict, tensors: dict[str, torch.Tensor], shards: int = 2) -> Path:
    """config.json + ``shards`` safetensors files + model.safetensors.index.json, as released."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "tokenizer_config.json").write_text("{}")
    names = sorted(tensors)
    if shards == 1:
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return folder
    weight_map = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s::shards]}
        save_file(part, str(folder / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    return folder


def reference_logits(cfg: dict, t: dict[str, torch.Tensor], ids: torch.Tensor, allow: torch.Tensor | None = None):
    """Plain float64 LLaDA forward: explicit softmax attention, pairwise RoPE rotation."""
    t = {k: v.double() for k, v in t.items()}
    d, nh, nkv, eps = cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"], cfg["rms_norm_eps"]
    hd, half = d // nh, d // nh // 2
    B, L = ids.shape
    ang = torch.arange(L, dtype=torch.float64)[:, None] * cfg["rope_theta"] ** (
        -torch.arange(half, dtype=torch.float64) * 2 / hd
    )[None]  # [L, half]

    def norm(x, wgt):
        return wgt * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)

    def rope(x):  # [B, H, L, hd]: rotate (x[i], x[i + half]) by ang[:, i]
        a, b = x[..., :half], x[..., half:]
        return torch.cat([a * ang.cos() - b * ang.sin(), b * ang.cos() + a * ang.sin()], -1)

    x = t["model.transformer.wte.weight"][ids]
    for i in range(cfg["n_layers"]):
        p = f"model.transformer.blocks.{i}."
        h = norm(x, t[p + "attn_norm.weight"])
        q = (h @ t[p + "q_proj.weight"].T).view(B, L, nh, hd).transpose(1, 2)
        k = (h @ t[p + "k_proj.weight"].T).view(B, L, nkv, hd).transpose(1, 2)
        v = (h @ t[p + "v_proj.weight"].T).view(B, L, nkv, hd).transpose(1, 2)
        q, k = rope(q), rope(k)
        group = torch.arange(nh) // (nh // nkv)  # query head -> kv head
        k, v = k[:, group], v[:, group]
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)  # [B, H, L, L]
        if allow is not None:
            scores = scores.masked_fill(~allow, float("-inf"))
        x = x + (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, L, d) @ t[p + "attn_out.weight"].T
        h = norm(x, t[p + "ff_norm.weight"])
        gate, up = h @ t[p + "ff_proj.weight"].T, h @ t[p + "up_proj.weight"].T
        x = x + (gate * torch.sigmoid(gate) * up) @ t[p + "ff_out.weight"].T
    x = norm(x, t["model.transformer.ln_f.weight"])
    head = t["model.transformer.wte.weight"] if cfg["weight_tying"] else t["model.transformer.ff_out.weight"]
    return x @ head.T


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = official_config(**TINY)
    tensors = official_tensors(cfg)
    folder = write_official(tmp_path_factory.mktemp("llada") / "tiny-llada", cfg, tensors, shards=3)
    return folder, cfg, tensors


def load(path, **settings):
    return build_component("backbones", {"name": "llada", "path": str(path), **settings})


def test_official_sharded_checkpoint_matches_reference(checkpoint):
    folder, cfg, tensors = checkpoint
    model = load(folder).eval()
    ids = torch.randint(0, cfg["vocab_size"], (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(ids)
    ref = reference_logits(cfg, tensors, ids)
    assert got.shape == (2, 11, cfg["vocab_size"]) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-4)


def test_policy_mask_matches_reference_with_padding(checkpoint):
    folder, cfg, tensors = checkpoint
    model = load(folder).eval()
    ids = torch.randint(0, cfg["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(2))
    modality = torch.tensor([[0, 0, 1, 1, 1, 0, 1, 1, 0]] * 2)
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[1, 6:] = False
    mask = build_component("attention", "hybrid").mask(modality, valid)
    with torch.no_grad():
        got = model(ids, attention_mask=mask)
    ref = reference_logits(cfg, tensors, ids, allow=mask)
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-4)
    # and the mask matters: full attention gives different logits at early positions
    assert not torch.allclose(got[0, 0], model(ids)[0, 0].detach(), atol=1e-3)


def test_bfloat16_loading(checkpoint):
    folder, cfg, tensors = checkpoint
    model = load(folder, dtype="bfloat16").eval()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.equal(model.transformer["wte"].weight, tensors["model.transformer.wte.weight"].bfloat16())
    ids = torch.randint(0, cfg["vocab_size"], (1, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = model(ids).double()
    ref = reference_logits(cfg, tensors, ids)
    assert (got - ref).abs().max() < 0.1 * ref.abs().max()


def test_single_file_and_weight_tying(tmp_path):
    cfg = official_config(**TINY, tying=True)
    tensors = official_tensors(cfg, seed=5)
    folder = write_official(tmp_path / "tied", cfg, tensors, shards=1)
    model = load(folder).eval()
    assert "transformer.ff_out.weight" not in model.state_dict()
    ids = torch.tensor([[1, 5, 9, 100, 42]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).double(), reference_logits(cfg, tensors, ids), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_missing_or_extra_tensor_is_a_clear_error(tmp_path, change):
    cfg = official_config(**TINY)
    tensors = official_tensors(cfg)
    if change == "missing":
        del tensors["model.transformer.blocks.1.up_proj.weight"]
        key = "model.transformer.blocks.1.up_proj.weight"
    else:
        tensors["model.transformer.blocks.3.q_proj.weight"] = torch.zeros(32, 32)
        key = "model.transformer.blocks.3.q_proj.weight"
    folder = write_official(tmp_path / "bad", cfg, tensors, shards=2)
    with pytest.raises(CheckpointMismatchError, match=rf"1 {'missing' if change == 'missing' else 'unexpected'} tensor\(s\): {key}"):
        load(folder)


def test_wrong_shape_and_absent_shard_are_clear_errors(tmp_path):
    cfg = official_config(**TINY)
    tensors = official_tensors(cfg)
    tensors["model.transformer.blocks.0.k_proj.weight"] = torch.zeros(32, 32)
    folder = write_official(tmp_path / "shape", cfg, tensors, shards=2)
    with pytest.raises(CheckpointMismatchError, match=r"blocks\.0\.k_proj\.weight is \[32, 32\], expected \[16, 32\]"):
        load(folder)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
        load(folder)


def test_minimal_config_uses_released_defaults_and_infers_tying(tmp_path):
    full = official_config(**TINY, tying=True)
    keep = ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "vocab_size", "rope_theta")
    cfg = {k: full[k] for k in keep}  # no weight_tying, no block_type, ...
    tensors = official_tensors(full, seed=6)
    folder = write_official(tmp_path / "minimal", cfg, tensors, shards=2)
    model = load(folder).eval()
    assert model.arch.weight_tying and model.max_seq_len == 4096
    ids = torch.arange(70)[None] % 101
    with torch.no_grad():
        torch.testing.assert_close(model(ids).double(), reference_logits(full, tensors, ids), rtol=1e-4, atol=1e-4)


def test_pickle_only_folder_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(official_config(**TINY)))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="pickle checkpoints are not loaded"):
        load(tmp_path)


def test_unsupported_variant_and_clashing_settings(tmp_path, checkpoint):
    cfg = official_config(**TINY)
    cfg["include_bias"] = True
    write_official(tmp_path / "bias", cfg, official_tensors(official_config(**TINY)), shards=1)
    with pytest.raises(ValueError, match="include_bias=True is not supported"):
        load(tmp_path / "bias")
    with pytest.raises(ValueError, match=r"backbone\.d_model=64 but .*config\.json says 32"):
        load(checkpoint[0], d_model=64)


def test_extension_keeps_old_rows_and_exports_official_folder(tmp_path, checkpoint):
    folder, cfg, tensors = checkpoint
    base = load(folder).eval()
    model = load(folder, extend_vocab_to=120).eval()
    assert model.vocab_size == 120
    for ours, key in (("wte", "model.transformer.wte.weight"), ("ff_out", "model.transformer.ff_out.weight")):
        w = model.transformer[ours].weight
        assert torch.equal(w[:101], tensors[key])  # bit-identical
        assert torch.equal(w[101:], tensors[key].mean(0, keepdim=True).expand(19, -1))
    ids = torch.randint(0, 101, (1, 7), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(model.hidden_states(ids), base.hidden_states(ids))
        torch.testing.assert_close(model(ids)[..., :101], base(ids))  # matmul blocking may differ by ulps

    out = model.save_pretrained(tmp_path / "extended", max_shard_bytes=20_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted({*index["weight_map"].values()})
    assert len(shards) > 1 and all((out / s).is_file() for s in shards)
    assert set(index["weight_map"]) == {"model." + k for k in model.state_dict()}
    exported_cfg = json.loads((out / "config.json").read_text())
    assert exported_cfg["vocab_size"] == exported_cfg["embedding_size"] == 120
    assert exported_cfg["mask_token_id"] == 100 and exported_cfg["auto_map"] == cfg["auto_map"]
    assert (out / "tokenizer_config.json").is_file()
    reloaded = load(out).eval()
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(FileExistsError):
        model.save_pretrained(out)


def test_extension_bf16_export_and_shrink_is_refused(tmp_path, checkpoint):
    folder, _, tensors = checkpoint
    model = load(folder, extend_vocab_to=110, new_row_init="normal")
    assert torch.equal(model.transformer["wte"].weight[:101], tensors["model.transformer.wte.weight"])
    out = model.save_pretrained(tmp_path / "bf16", dtype="bfloat16")
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert load_file(str(out / "model.safetensors"))["model.transformer.wte.weight"].dtype == torch.bfloat16
    with pytest.raises(ValueError, match="extend_vocab_to=50 is smaller"):
        load(folder, extend_vocab_to=50)


def test_logits_at_returns_exactly_selected_rows():
    model = build_component("backbones", {"name": "llada", "preset": "tiny", "n_layers": 1, "seed": 0}).eval()
    ids = torch.randint(0, model.vocab_size, (2, 10))
    select = torch.rand(2, 10, generator=torch.Generator().manual_seed(0)) < 0.4
    with torch.no_grad():
        full = model(ids)
        picked = model(ids, logits_at=select)
    assert picked.shape == (int(select.sum()), model.vocab_size)
    # same rows in row-major order; the head GEMM over fewer rows may differ by float32 ulps
    torch.testing.assert_close(picked, full[select], rtol=1e-6, atol=1e-6)
    assert torch.equal(picked.argmax(-1), full[select].argmax(-1))


def test_state_dict_round_trips_through_safetensors(tmp_path):
    spec = {"name": "llada", "d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 1,
            "mlp_hidden_size": 40, "vocab_size": 50, "max_sequence_length": 32}
    a = build_component("backbones", {**spec, "seed": 1}).eval()
    b = build_component("backbones", {**spec, "seed": 2}).eval()
    save_file(a.state_dict(), str(tmp_path / "bb.safetensors"))
    assert b.load_state_dict(load_file(str(tmp_path / "bb.safetensors")))
    ids = torch.randint(0, 50, (1, 12))
    with torch.no_grad():
        assert torch.equal(a(ids), b(ids))


def test_training_after_an_inference_mode_forward():
    model = build_component("backbones", {"name": "llada", "preset": "tiny", "n_layers": 1, "seed": 0})
    ids = torch.arange(6)[None]
    with torch.inference_mode():
        model(ids)  # builds the RoPE tables
    model.train()
    model(ids, logits_at=ids > 2).sum().backward()
    assert model.transformer["wte"].weight.grad is not None


def test_gradient_checkpointing_gives_same_gradients():
    spec = {"name": "llada", "d_model": 32, "n_layers": 2, "n_heads": 2, "mlp_hidden_size": 40,
            "vocab_size": 30, "max_sequence_length": 16, "seed": 3}
    grads = []
    for ckpt in (False, True):
        model = build_component("backbones", {**spec, "gradient_checkpointing": ckpt}).train()
        ids = torch.arange(12).remainder(30)[None]
        model(ids, logits_at=ids % 2 == 0).logsumexp(-1).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_presets_and_config_errors():
    tiny = build_component("backbones", {"name": "llada", "preset": "tiny", "seed": 0})
    n = sum(p.numel() for p in tiny.parameters())
    assert 1_000_000 < n < 10_000_000 and n == tiny.arch.num_parameters()
    assert build_component("backbones", "llada").arch == tiny.arch  # default preset is tiny
    short = build_component("backbones", {"name": "llada", "preset": "tiny", "n_layers": 1, "max_sequence_length": 8})
    assert torch.isfinite(short.hidden_states(torch.zeros(1, 12, dtype=torch.long))).all()  # RoPE tables grow
    with pytest.raises(ValueError, match="unknown preset 'huge'; valid presets: tiny, small, 8b"):
        build_component("backbones", {"name": "llada", "preset": "huge"})
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        build_component("backbones", {"name": "llada", "dtype": "fp8"})
    with pytest.raises(ConfigError, match=r"backbone\.d_modle: unknown key .* Did you mean 'd_model'"):
        build_component("backbones", {"name": "llada", "d_modle": 8}, path="backbone")


def test_bench_backbone_prints_one_json_line(capsys):
    from diffuspeech.cli import main

    argv = ["bench", "backbone", "--json", "--length", "8", "--repeats", "1", "--no-gpu", "--no-reference"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["cpu_device"].startswith("cpu") and result["gpu_device"] is None
    for preset in ("tiny", "small"):
        assert result[f"cpu_{preset}_tokens_per_s"] > 0
    assert 1 < result["cpu_tiny_params_m"] < 10 < result["cpu_small_params_m"] < 50


def test_loading_peak_memory_stays_below_twice_the_model(tmp_path):
    """Loading streams tensor by tensor: the process grows by about the model, not two copies."""
    import subprocess
    import sys

    # many small tensors in 8 shards: the file pages mapped while one shard is read stay small
    cfg = official_config(d_model=256, n_layers=8, n_heads=4, n_kv_heads=4, mlp_hidden_size=1024, vocab=2000,
                          max_len=64)
    tensors = official_tensors(cfg)
    model_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
    write_official(tmp_path / "mem", cfg, tensors, shards=8)
    del tensors
    script = (
        "import resource, sys\n"
        "from diffuspeech import build_component, get_registry\n"
        "get_registry()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "m = build_component('backbones', {'name': 'llada', 'path': sys.argv[1]})\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "mem")], capture_output=True, text=True, check=True)
    growth = int(out.stdout.strip().splitlines()[-1])
    assert model_bytes > 30e6
    assert growth < 1.6 * model_bytes, f"peak grew by {growth / 1e6:.0f} MB for a {model_bytes / 1e6:.0f} MB model"
