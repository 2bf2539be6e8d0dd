"""The ``mel_kmeans`` tokenizer: features, the shared centroids format, real espeak-ng speech."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.cluster.vq import vq

from diffuspeech import build_component
from diffuspeech.audio import load_audio, resample, write_audio
from diffuspeech.kmeans import fit_kmeans
from diffuspeech.mel import MelConfig, log_mel
from diffuspeech.plugins.tokenizers.mel_kmeans import MelKMeansTokenizer
from diffuspeech.quantizers import QuantizerError, load_centroids, save_centroids
from diffuspeech.recipes.arith.espeak import synthesize


def speech(text: str, voice: str = "en-us+f2") -> torch.Tensor:
    """Real speech from espeak-ng, at 16 kHz."""
    wav, sr = synthesize(text, voice=voice, speed=150)
    return resample(torch.as_tensor(np.asarray(wav, dtype=np.float32)), sr, 16000)


@pytest.fixture(scope="module")
def corpus() -> dict[str, torch.Tensor]:
    texts = ["what is three plus four", "seven", "twenty", "ten minus two", "zero"]
    return {t: speech(t) for t in texts}


@pytest.fixture(scope="module")
def centroids_file(tmp_path_factory, corpus):
    tok = MelKMeansTokenizer()
    frames = torch.cat([tok.features(w[None])[0][0] for w in corpus.values()])  # [N, 80]
    result = fit_kmeans(frames, 32, seed=0)
    path = tmp_path_factory.mktemp("mel") / "c.safetensors"
    save_centroids(path, result.centroids, "mel_kmeans", {"mel_config": MelConfig().to_json()})
    return path


def test_features_are_log_mel_at_25_hz_and_batching_is_exact():
    tok = MelKMeansTokenizer()
    assert tok.frame_rate == 25.0 and tok.sample_rate == 16000 and tok.num_units == 0
    g = torch.Generator().manual_seed(0)
    rows = [0.1 * torch.randn(n, generator=g) for n in (16000, 7000, 300)]
    batch = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    feats, n = tok.features(batch, torch.tensor([r.numel() for r in rows]))
    assert n.tolist() == [26, 11, 1]  # samples // 640 + 1
    for i, row in enumerate(rows[:2]):
        assert torch.allclose(feats[i, : n[i]], log_mel(row, MelConfig()), atol=1e-5)
    assert torch.all(feats[1, n[1] :] == 0)


def test_centroids_file_has_the_format_the_griffinlim_vocoder_reads(centroids_file):
    centroids, meta, extra = load_centroids(centroids_file)
    assert centroids.dtype == torch.float32 and centroids.shape == (32, 80)
    assert meta["kind"] == "mel_kmeans" and meta["num_units"] == "32"
    assert MelConfig.from_json(meta["mel_config"]) == MelConfig()
    assert extra == {}


def test_units_are_nearest_centroids_of_real_speech(centroids_file, corpus):
    tok = build_component("tokenizers", {"name": "mel_kmeans", "path": str(centroids_file)}, "tokenizer")
    assert tok.num_units == 32
    centroids = load_centroids(centroids_file)[0].double().numpy()
    used = set()
    for wav in corpus.values():
        units = tok.encode_one(wav)
        ref, _ = vq(log_mel(wav, MelConfig()).double().numpy(), centroids)
        assert np.array_equal(units.numpy(), ref)
        used.update(units.tolist())
    assert len(used) >= 24  # speech spreads over the codebook
    # the same word said again gives (nearly: espeak-ng keeps a little state between calls)
    # the same units; another word does not
    again, seven, zero = (tok.encode_one(w) for w in (speech("seven"), corpus["seven"], corpus["zero"]))
    n = min(again.numel(), seven.numel(), zero.numel())
    assert abs(again.numel() - seven.numel()) <= 1
    assert (again[:n] == seven[:n]).float().mean() > 0.8 > (zero[:n] == seven[:n]).float().mean()


def test_files_at_other_rates_and_stereo_are_resampled_and_downmixed(centroids_file, tmp_path, corpus):
    wav, sr = synthesize("seven", voice="en-us+f2", speed=150)  # 22050 Hz
    stereo = torch.stack([torch.as_tensor(wav), torch.as_tensor(wav)])
    write_audio(tmp_path / "seven.wav", stereo, sr, subtype="PCM_24")
    tok = MelKMeansTokenizer(MelKMeansTokenizer.Config(path=str(centroids_file)))
    units = tok.encode_file(tmp_path / "seven.wav")
    assert torch.equal(units, tok.encode_one(load_audio(tmp_path / "seven.wav", 16000)))
    expected = tok.encode_one(corpus["seven"])
    assert abs(units.numel() - expected.numel()) <= 1
    agree = (units[: expected.numel()] == expected[: units.numel()]).float().mean()
    assert agree > 0.8  # 24-bit rounding barely moves a frame


def test_normalised_centroids_stay_in_raw_log_mel_space(tmp_path, corpus):
    tok = MelKMeansTokenizer()
    frames = torch.cat([tok.features(w[None])[0][0] for w in corpus.values()])  # [N, 80]
    mean, std = frames.mean(0), frames.std(0)
    result = fit_kmeans((frames - mean) / std, 16, seed=1)
    raw = result.centroids * std + mean
    save_centroids(tmp_path / "n.safetensors", raw, "mel_kmeans", {"mel_config": MelConfig().to_json()},
                   {"feature_mean": mean, "feature_std": std})
    tok = MelKMeansTokenizer(MelKMeansTokenizer.Config(path=str(tmp_path / "n.safetensors")))
    units = tok.encode_one(corpus["twenty"])
    feats = log_mel(corpus["twenty"], MelConfig())
    ref, _ = vq(((feats - mean) / std).double().numpy(), ((raw - mean) / std).double().numpy())
    assert np.array_equal(units.numpy(), ref)
    # each stored centroid is (close to) the mean raw log-mel frame of its cluster
    ids = torch.from_numpy(vq(((frames - mean) / std).double().numpy(), ((raw - mean) / std).double().numpy())[0])
    for k in range(16):
        if int((ids == k).sum()) > 0:
            assert torch.allclose(raw[k], frames[ids == k].mean(0), atol=0.05)


def test_errors_name_the_file_and_the_fix(tmp_path, centroids_file):
    with pytest.raises(ValueError, match="no quantizer: set tokenizer.path .* fit-quantizer"):
        MelKMeansTokenizer().encode(torch.zeros(1, 1000))
    with pytest.raises(QuantizerError, match="quantizer file not found"):
        MelKMeansTokenizer(MelKMeansTokenizer.Config(path=str(tmp_path / "nope.safetensors")))
    save_centroids(tmp_path / "h.safetensors", torch.randn(4, 80), "kmeans")
    with pytest.raises(QuantizerError, match="kind='kmeans' but the mel_kmeans tokenizer needs"):
        MelKMeansTokenizer(MelKMeansTokenizer.Config(path=str(tmp_path / "h.safetensors")))
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(QuantizerError, match="not a safetensors centroids file"):
        MelKMeansTokenizer(MelKMeansTokenizer.Config(path=str(tmp_path / "junk.safetensors")))
    with pytest.raises(QuantizerError, match="tokenizer.mel differs"):
        MelKMeansTokenizer(MelKMeansTokenizer.Config(path=str(centroids_file), mel=MelConfig(n_mels=40)))
    with pytest.raises(ValueError, match="row 0: contains NaN"):
        MelKMeansTokenizer(MelKMeansTokenizer.Config(path=str(centroids_file))).encode(torch.full((1, 900), float("inf")))


def test_assign_units_keeps_the_tail_of_the_codebook_output_only(tmp_path, corpus):
    """Questions read onto the first N centroids; exact answer frames appended after them stay
    output-only, and ``with_all_units`` reads the answer back onto its own frames."""
    base = MelKMeansTokenizer()
    question = base.features(corpus["what is three plus four"][None])[0][0]  # [T, 80]
    answer = base.features(corpus["seven"][None])[0][0]  # [M, 80]
    kmeans = fit_kmeans(question, 8, seed=0).centroids  # [8, 80]
    path = tmp_path / "split.safetensors"
    save_centroids(path, torch.cat([kmeans, answer]), "mel_kmeans", {"mel_config": MelConfig().to_json()})

    full = build_component("tokenizers", {"name": "mel_kmeans", "path": str(path)}, "tokenizer")
    split = build_component("tokenizers", {"name": "mel_kmeans", "path": str(path), "assign_units": 8}, "tokenizer")
    assert split.num_units == full.num_units == 8 + answer.shape[0]
    seven = corpus["seven"]
    assert full.encode_one(seven).tolist() == list(range(8, 8 + answer.shape[0]))  # its own frames, exactly
    assert int(split.encode_one(seven).max()) < 8  # never read as answer frames
    assert split.with_all_units().encode_one(seven).tolist() == full.encode_one(seven).tolist()
    assert int(split.encode_one(seven).max()) < 8  # the copy did not change the original
    with pytest.raises(QuantizerError, match=r"tokenizer.assign_units=99: .* has \d+ centroids; use a value in \[1, \d+\]"):
        build_component("tokenizers", {"name": "mel_kmeans", "path": str(path), "assign_units": 99}, "tokenizer")
    with pytest.raises(QuantizerError, match="assign_units needs tokenizer.path"):
        build_component("tokenizers", {"name": "mel_kmeans", "assign_units": 4}, "tokenizer")
