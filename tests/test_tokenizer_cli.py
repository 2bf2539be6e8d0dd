"""``fit-quantizer``, ``tokenize`` and ``convert-quantizer`` end to end on real espeak-ng speech."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf
from transformers import HubertConfig, HubertModel

from diffuspeech import build_component
from diffuspeech.cli import main
from diffuspeech.mel import MelConfig
from diffuspeech.plugins.tokenizers.mel_kmeans import MelKMeansTokenizer
from diffuspeech.quantizers import load_centroids
from diffuspeech.recipes.arith.espeak import synthesize
from diffuspeech.unit_store import UnitStore

TEXTS = {
    "a": ("what is two plus three", "en-us+f2", "PCM_16"),
    "b": ("seven minus four", "en-us+m3", "PCM_24"),
    "c": ("ten", "en-us+f4", "FLOAT"),
    "d": ("eight plus nine", "en-us+m1", "PCM_U8"),
    "e": ("twenty", "en-us+f2", "PCM_16"),
}
GOOD = list(TEXTS)
BAD = ["notaudio", "missing", "truncated", "nan"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Real speech at 22.05 kHz in several formats (one stereo), plus bad files; a manifest."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "wav").mkdir()
    lines = []
    for utt, (text, voice, subtype) in TEXTS.items():
        wav, sr = synthesize(text, voice=voice, speed=160)
        wav = np.asarray(wav, dtype=np.float32)
        if utt == "b":
            wav = np.stack([wav, 0.5 * wav], 1)  # stereo
        sf.write(root / "wav" / f"{utt}.wav", wav, sr, subtype=subtype)
        lines.append({"id": utt, "audio": f"wav/{utt}.wav", "text": text})
    (root / "wav" / "notaudio.wav").write_text("hello")
    full = (root / "wav" / "a.wav").read_bytes()
    (root / "bad").mkdir()
    (root / "bad" / "truncated.wav").write_bytes(full[: len(full) // 3])
    sf.write(root / "bad" / "nan.wav", np.array([0.1, np.nan, 0.2] * 1000, np.float32), 16000, subtype="FLOAT")
    lines += [
        {"id": "notaudio", "audio": "wav/notaudio.wav"},
        {"id": "missing", "audio": "wav/missing.wav"},
        {"id": "truncated", "audio": str(root / "bad" / "truncated.wav")},  # absolute path
        {"id": "nan", "audio": "bad/nan.wav"},
    ]
    (root / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


@pytest.fixture(scope="module")
def mel_quantizer(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "mel.safetensors"
    assert main(["fit-quantizer", str(corpus / "wav"), "--out", str(out), "--num-units", "24", "--seed", "1"]) == 0
    return out


def test_fit_quantizer_writes_the_shared_format_and_a_config(mel_quantizer, capsys):
    centroids, meta, _ = load_centroids(mel_quantizer)
    assert centroids.shape == (24, 80) and meta["kind"] == "mel_kmeans" and meta["num_units"] == "24"
    assert MelConfig.from_json(meta["mel_config"]) == MelConfig()
    fit = json.loads(meta["fit"])
    assert fit["frames"] > 100 and fit["iterations"] >= 1
    cfg = OmegaConf.load(mel_quantizer.with_suffix(".yaml"))
    tok = build_component("tokenizers", cfg.tokenizer, "tokenizer")
    assert isinstance(tok, MelKMeansTokenizer) and tok.num_units == 24


def test_tokenize_lists_bad_files_and_finishes_the_rest(corpus, mel_quantizer, tmp_path, capsys):
    out = tmp_path / "units"
    cfg = str(mel_quantizer.with_suffix(".yaml"))
    rc = main(["tokenize", str(corpus / "manifest.jsonl"), "--out", str(out), "--tokenizer-config", cfg, "--batch-size", "2"])
    assert rc == 3  # finished, some inputs failed
    err = capsys.readouterr().err
    assert "real-time factor" in err and "4 input(s) failed" in err
    for name, problem in [("notaudio", "not a readable audio file"), ("missing", "file not found"),
                          ("truncated", "truncated file"), ("nan", "NaN")]:
        assert any(line.strip().startswith(f"{name}:") and problem in line for line in err.splitlines()), name
    failed = [json.loads(x)["id"] for x in (out / "failed.jsonl").read_text().splitlines()]
    assert sorted(failed) == sorted(BAD)
    store = UnitStore(out)
    assert sorted(store.ids()) == GOOD
    tok = MelKMeansTokenizer(MelKMeansTokenizer.Config(path=str(mel_quantizer)))
    for utt in GOOD:
        assert torch.equal(store[utt], tok.encode_file(corpus / "wav" / f"{utt}.wav"))
        info = sf.info(str(corpus / "wav" / f"{utt}.wav"))
        assert store.record(utt).duration_s == pytest.approx(info.frames / info.samplerate, abs=1e-3)
    assert store.meta["tokenizer"]["name"] == "mel_kmeans" and store.meta["num_units"] == 24


def test_tokenize_resumes_after_an_interruption(corpus, mel_quantizer, tmp_path, monkeypatch, capsys):
    manifest = tmp_path / "good.jsonl"
    manifest.write_text("".join(json.dumps({"id": u, "audio": str(corpus / "wav" / f"{u}.wav")}) + "\n" for u in GOOD))
    args = ["tokenize", str(manifest), "--out", str(tmp_path / "u"), f"tokenizer.path={mel_quantizer}",
            "--tokenizer-config", str(mel_quantizer.with_suffix(".yaml")), "--batch-size", "2", "--shard-size", "2"]
    original = MelKMeansTokenizer.encode
    calls = []

    def flaky(self, *a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *a, **kw)

    monkeypatch.setattr(MelKMeansTokenizer, "encode", flaky)
    assert main(args) == 130
    assert len(UnitStore(tmp_path / "u")) == 2  # the first batch was saved
    monkeypatch.setattr(MelKMeansTokenizer, "encode", original)
    assert main(args) == 0
    assert "resuming: 2 of 5" in capsys.readouterr().err
    index = [json.loads(x)["id"] for x in (tmp_path / "u" / "index.jsonl").read_text().splitlines()]
    assert sorted(index) == GOOD  # every id exactly once
    assert main(args[:2] + ["--out", str(tmp_path / "fresh")] + args[4:]) == 0
    resumed, fresh = UnitStore(tmp_path / "u"), UnitStore(tmp_path / "fresh")
    assert all(torch.equal(resumed[u], fresh[u]) for u in GOOD)


def test_tokenize_refuses_a_tokenizer_without_quantizer_or_a_different_one(corpus, mel_quantizer, tmp_path, capsys):
    manifest = str(corpus / "manifest.jsonl")
    assert main(["tokenize", manifest, "--out", str(tmp_path / "x"), "tokenizer.name=mel_kmeans"]) == 2
    assert "tokenizer.path: the mel_kmeans tokenizer has no quantizer" in capsys.readouterr().err
    assert main(["tokenize", manifest, "--out", str(tmp_path / "y"), f"tokenizer.path={mel_quantizer}",
                 "--tokenizer-config", str(mel_quantizer.with_suffix(".yaml"))]) == 3
    capsys.readouterr()
    assert main(["tokenize", manifest, "--out", str(tmp_path / "y"), f"tokenizer.path={mel_quantizer}",
                 "tokenizer.dedup=true", "--tokenizer-config", str(mel_quantizer.with_suffix(".yaml"))]) == 2
    err = capsys.readouterr().err
    assert "different tokenizer" in err and "Traceback" not in err
    (tmp_path / "m.jsonl").write_text('{"id": "a"}\n')
    assert main(["tokenize", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "z"), "tokenizer.name=mel_kmeans"]) == 2
    assert "m.jsonl:1: each line needs the keys 'id' and 'audio'" in capsys.readouterr().err


def test_hubert_fit_and_tokenize_with_dedup(corpus, tmp_path):
    torch.manual_seed(0)
    cfg = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, conv_dim=(16,) * 7)
    HubertModel(cfg).save_pretrained(tmp_path / "hubert")
    q = tmp_path / "hub.safetensors"
    manifest = str(corpus / "manifest.jsonl")
    assert main(["fit-quantizer", manifest, "tokenizer.name=hubert", f"tokenizer.model_path={tmp_path / 'hubert'}",
                 "tokenizer.layer=2", "tokenizer.dedup=true", "--out", str(q), "--num-units", "8", "--normalize"]) == 0
    centroids, meta, extra = load_centroids(q)
    assert centroids.shape == (8, 32) and meta["kind"] == "kmeans" and meta["layer"] == "2"
    assert set(extra) == {"feature_mean", "feature_std"}
    out = tmp_path / "units"
    assert main(["tokenize", manifest, "--out", str(out), "--tokenizer-config", str(q.with_suffix(".yaml"))]) == 3
    store = UnitStore(out)
    assert sorted(store.ids()) == GOOD and store.meta["frame_rate"] == 25.0
    for utt in GOOD:
        units, durations = store[utt], store.durations(utt)
        assert durations is not None and durations.shape == units.shape and int(durations.min()) >= 1
        assert bool((units[1:] != units[:-1]).all())  # deduplicated
        assert int(durations.sum()) == pytest.approx(store.record(utt).duration_s * 25, abs=2)


class FakeKMeans:
    """Stands in for a pickled scikit-learn KMeans (same attribute)."""

    def __init__(self, centers: np.ndarray) -> None:
        self.cluster_centers_ = centers


def test_convert_quantizer_needs_trust_for_pickles(tmp_path, capsys):
    centers = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    with open(tmp_path / "km.bin", "wb") as f:
        pickle.dump(FakeKMeans(centers), f)
    out = tmp_path / "km.safetensors"
    assert main(["convert-quantizer", str(tmp_path / "km.bin"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "refusing to load" in err and "can run arbitrary code" in err and "--trust-pickle" in err
    assert not out.exists()
    assert main(["convert-quantizer", str(tmp_path / "km.bin"), "--out", str(out), "--trust-pickle"]) == 0
    centroids, meta, _ = load_centroids(out)
    assert np.array_equal(centroids.numpy(), centers) and meta["kind"] == "kmeans"
    # a torch checkpoint with a cluster_centers tensor is read weights-only: no flag needed
    torch.save({"cluster_centers": torch.from_numpy(centers), "n_clusters": 6}, tmp_path / "km.pt")
    assert main(["convert-quantizer", str(tmp_path / "km.pt"), "--out", str(tmp_path / "pt.safetensors")]) == 0
    assert torch.equal(load_centroids(tmp_path / "pt.safetensors")[0], torch.from_numpy(centers))
    with open(tmp_path / "obj.bin", "wb") as f:
        pickle.dump({"nothing": 1}, f)
    assert main(["convert-quantizer", str(tmp_path / "obj.bin"), "--out", str(tmp_path / "o.safetensors"), "--trust-pickle"]) == 2
    assert "no k-means centroids found in a dict" in capsys.readouterr().err


def test_convert_a_real_scikit_learn_pickle(tmp_path):
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    joblib = pytest.importorskip("joblib")
    x = np.random.default_rng(0).normal(size=(200, 5))
    km = sklearn_cluster.MiniBatchKMeans(n_clusters=7, n_init=1, random_state=0).fit(x)
    joblib.dump(km, tmp_path / "km.bin")
    out = tmp_path / "km.safetensors"
    assert main(["convert-quantizer", str(tmp_path / "km.bin"), "--out", str(out), "--trust-pickle"]) == 0
    from diffuspeech.quantizers import KMeansQuantizer

    q = KMeansQuantizer.from_file(out)
    assert np.allclose(q.centroids.numpy(), km.cluster_centers_, atol=1e-6)
    assert np.array_equal(q(torch.from_numpy(x).float()).numpy(), km.predict(x))
