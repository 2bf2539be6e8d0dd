"""The ``hubert`` tokenizer on tiny HuBERT models written by transformers (both 25 Hz routes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.cluster.vq import vq
from torch import nn
from transformers import HubertConfig, HubertModel

from diffuspeech import ConfigError, build_component
from diffuspeech.audio import chunk_spans
from diffuspeech.mel import MelConfig
from diffuspeech.plugins.tokenizers.hubert import HubertTokenizer
from diffuspeech.quantizers import LinearQuantizer, QuantizerError, save_centroids

HIDDEN = 32
SMALL = dict(
    hidden_size=HIDDEN, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
)
# HuBERT-base front-end (7 convs, stride 320 = 50 Hz, group norm) and mHuBERT-25Hz (8 convs, stride 640)
ROUTES = {
    "base50": dict(conv_dim=(16,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2), feat_extract_norm="group"),
    "native25": dict(
        conv_dim=(16,) * 8, conv_stride=(5, 2, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2, 2),
        feat_extract_norm="layer", do_stable_layer_norm=True,
    ),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubert")
    out = {}
    for i, (name, conv) in enumerate(ROUTES.items()):
        torch.manual_seed(i)
        model = HubertModel(HubertConfig(**SMALL, **conv)).eval()
        model.save_pretrained(root / name)
        out[name] = (root / name, model)
    centroids = torch.randn(20, HIDDEN, generator=torch.Generator().manual_seed(5))
    save_centroids(root / "km.safetensors", centroids, "kmeans")
    out["km"] = (root / "km.safetensors", centroids)
    return out


def make(models, route: str, **kw) -> HubertTokenizer:
    kw.setdefault("quantizer", str(models["km"][0]))
    return HubertTokenizer(HubertTokenizer.Config(model_path=str(models[route][0]), layer=2, **kw))


def wave(seconds: float, seed: int = 0) -> torch.Tensor:
    return 0.1 * torch.randn(int(16000 * seconds), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("route", list(ROUTES))
def test_features_match_the_full_model_hidden_state_at_the_layer(models, route):
    folder, model = models[route]
    tok = make(models, route, quantizer=None)
    assert tok.frame_rate == 25.0 and tok.sample_rate == 16000
    assert tok.pool_pairs == (route == "base50")
    assert len(tok.model.encoder.layers) == 2  # only the layers up to the chosen one are kept
    x = wave(1.03)
    with torch.no_grad():
        ref = model(x[None], output_hidden_states=True).hidden_states[2][0]  # [T50 or T25, H]
    if route == "base50":
        t = ref.shape[0]
        assert t % 2 == 1  # the odd last frame is kept on its own
        ref = torch.cat([ref[: t - 1].reshape(-1, 2, HIDDEN).mean(1), ref[t - 1 :]])
    feats, n = tok.features(x[None])
    assert int(n[0]) == ref.shape[0] == feats.shape[1]
    assert torch.allclose(feats[0], ref, atol=1e-5)


def test_pool_none_keeps_50_hz(models):
    tok = make(models, "base50", pool="none")
    assert tok.frame_rate == 50.0
    assert int(tok.features(wave(1.0)[None])[1][0]) == 49  # (16000 - 400) // 320 + 1


@pytest.mark.parametrize("route", list(ROUTES))
def test_batched_equals_unbatched_and_units_are_nearest_centroids(models, route):
    tok = make(models, route)
    rows = [wave(1.2, 1), wave(0.45, 2), wave(0.8, 3)]
    batch = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    lengths = torch.tensor([r.numel() for r in rows])
    units, n = tok.encode(batch, lengths)
    feats, fn = tok.features(batch, lengths)
    assert torch.equal(n, fn) and units.dtype == torch.long
    for i, row in enumerate(rows):
        single = tok.encode_one(row)
        assert torch.equal(single, units[i, : n[i]])
        f1, _ = tok.features(row[None])
        assert torch.allclose(f1[0], feats[i, : fn[i]], atol=1e-5)
        ref, _ = vq(f1[0].double().numpy(), models["km"][1].double().numpy())
        assert np.array_equal(single.numpy(), ref)


def test_long_audio_is_encoded_in_chunks(models):
    tok = make(models, "base50", chunk_seconds=0.5, max_batch_chunks=2)
    x = wave(1.7, 4)
    feats, n = tok.features(x[None])
    pieces = [x[s:e] for s, e in chunk_spans(x.numel(), 8000, tok.hop)]
    assert len(pieces) == 4  # 0.5 s rounded down to whole 25 Hz frames: 7680 samples
    whole = make(models, "base50", chunk_seconds=0)
    ref = torch.cat([whole.features(p[None])[0][0] for p in pieces])
    assert int(n[0]) == ref.shape[0] and torch.allclose(feats[0, : n[0]], ref, atol=1e-5)


def test_dedup_and_durations(models):
    tok = make(models, "native25")
    frames, n = tok.encode_frames(wave(1.5, 6)[None])
    units, durations, m = tok.encode_with_durations(wave(1.5, 6)[None])
    ref_u, ref_d = torch.unique_consecutive(frames[0, : n[0]], return_counts=True)
    assert torch.equal(units[0, : m[0]], ref_u) and torch.equal(durations[0, : m[0]], ref_d)
    assert int(durations[0].sum()) == int(n[0])
    dedup = make(models, "native25", dedup=True)
    assert torch.equal(dedup.encode_one(wave(1.5, 6)), ref_u)


def spiritlm_checkpoint(path, vocab_size: int, dim: int, calibrate: torch.Tensor | None = None) -> nn.Sequential:
    """A checkpoint in SpiritLM's linear-quantizer layout (layer sizes from its model_cfg).

    With ``calibrate`` features ``[T, dim]``, the blank's bias is set so that about half of
    those frames come out blank.
    """
    upstream_dim = 48
    mid = upstream_dim - (vocab_size + 1)
    mlp = nn.Sequential(
        nn.Linear(dim, dim - mid // 4), nn.LeakyReLU(), nn.Linear(dim - mid // 4, dim - mid // 2), nn.LeakyReLU(),
        nn.Linear(dim - mid // 2, vocab_size + 1),
    )
    if calibrate is not None:
        with torch.no_grad():
            logits = mlp(calibrate)
            margin = logits[:, :-1].max(-1).values - logits[:, -1]
            mlp[4].bias[-1] += margin.median()
    cfg = {"vocab_size": vocab_size, "dim": dim, "upstream_dim": upstream_dim}
    torch.save({"model_cfg": cfg, "model_weight": mlp.state_dict()}, path)
    return mlp


def spiritlm_reference(mlp: nn.Sequential, x: torch.Tensor, blank: int) -> torch.Tensor:
    """SpiritLM's post-processing: repeatedly copy the left neighbour into blank frames."""
    code = torch.log_softmax(mlp(x), -1).argmax(-1)  # [T]
    for _ in range(10000):
        if not (code == blank).any():
            break
        code[code == blank] = torch.roll(code, 1)[code == blank]
    return code


def test_spiritlm_linear_quantizer(models, tmp_path):
    torch.manual_seed(0)
    x = wave(2.0, 7)
    feats = make(models, "base50", quantizer=None).features(x[None])[0][0]  # [T, H]
    mlp = spiritlm_checkpoint(tmp_path / "lq.pt", vocab_size=12, dim=HIDDEN, calibrate=feats)
    tok = make(models, "base50", quantizer=str(tmp_path / "lq.pt"))
    assert isinstance(tok.quantizer, LinearQuantizer) and tok.num_units == 12
    units = tok.encode_one(x)
    with torch.no_grad():
        logits = mlp(feats)
        raw = logits.argmax(-1)
        ref = spiritlm_reference(mlp, feats, 12)
    assert 5 < int((raw == 12).sum()) < raw.numel() - 5  # the test exercises blank replacement
    assert int(units.max()) < 12 and torch.equal(units[raw != 12], raw[raw != 12])
    # SpiritLM wraps leading blanks around to the last frame; ours take their best non-blank unit
    start = int((raw != 12).nonzero()[0, 0])
    assert torch.equal(units[start:], ref[start:])
    assert torch.equal(units[:start], logits[:start, :-1].argmax(-1))
    two = torch.stack([feats, feats.flip(0)])  # rows are filled independently
    assert torch.equal(tok.quantizer(two)[1], tok.quantizer(feats.flip(0)))


EXECUTED: list[str] = []


def _run_on_load() -> None:
    EXECUTED.append("code ran while loading")


class Payload:
    """Unpickling this calls ``_run_on_load``: what a hostile checkpoint would do."""

    def __reduce__(self):
        return (_run_on_load, ())


def test_unsafe_or_malformed_quantizer_files_are_refused(models, tmp_path):
    torch.save({"model_cfg": {"vocab_size": 3}, "model_weight": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(QuantizerError, match="weights-only"):
        make(models, "base50", quantizer=str(tmp_path / "evil.pt"))
    assert EXECUTED == []
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(QuantizerError, match="expected keys model_cfg and model_weight"):
        make(models, "base50", quantizer=str(tmp_path / "other.pt"))
    spiritlm_checkpoint(tmp_path / "wide.pt", vocab_size=12, dim=HIDDEN + 8)
    with pytest.raises(QuantizerError, match=r"expects 40-dim features but layer 2 .* gives 32"):
        make(models, "base50", quantizer=str(tmp_path / "wide.pt"))
    save_centroids(tmp_path / "mel.safetensors", torch.randn(4, HIDDEN), "mel_kmeans", {"mel_config": MelConfig().to_json()})
    with pytest.raises(QuantizerError, match="'mel_kmeans' centroids"):
        make(models, "base50", quantizer=str(tmp_path / "mel.safetensors"))


def test_config_errors_name_the_key(models, tmp_path):
    with pytest.raises(ValueError, match="tokenizer.model_path is required"):
        HubertTokenizer(HubertTokenizer.Config())
    with pytest.raises(ValueError, match="is not a folder"):
        HubertTokenizer(HubertTokenizer.Config(model_path=str(tmp_path / "none")))
    with pytest.raises(ValueError, match=r"tokenizer.layer=7 is out of range: .* has layers 0..3"):
        HubertTokenizer(HubertTokenizer.Config(model_path=str(models["base50"][0]), layer=7))
    with pytest.raises(ValueError, match="tokenizer.pool='quad'; valid: auto, pair, none"):
        make(models, "base50", pool="quad")
    with pytest.raises(ConfigError, match=r"tokenizer.layers: unknown key .* Did you mean 'layer'"):
        build_component("tokenizers", {"name": "hubert", "model_path": "x", "layers": 3}, "tokenizer")
    with pytest.raises(ValueError, match="has no quantizer: set tokenizer.quantizer"):
        make(models, "base50", quantizer=None).encode(wave(0.5)[None])
    with pytest.raises(ValueError, match="NaN"):
        make(models, "base50").encode(torch.tensor([[0.0, float("nan")] * 800]))


def test_built_from_a_config_node_and_tiny_inputs(models):
    node = {"name": "hubert", "model_path": str(models["native25"][0]), "layer": 1, "quantizer": str(models["km"][0])}
    tok = build_component("tokenizers", node, "tokenizer")
    assert isinstance(tok, HubertTokenizer) and tok.num_units == 20
    assert tok.encode_one(torch.full((100,), 0.01)).numel() == 1  # shorter than one frame: padded to one
