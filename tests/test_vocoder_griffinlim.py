"""griffinlim reads the mel_kmeans centroids format and reconstructs the centroid spectrogram;
vocoders swap by config; bad input fails before any work."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from diffuspeech import build_component, load_config
from diffuspeech.mel import MelConfig, log_mel
from diffuspeech.plugins.vocoders.griffinlim import CentroidsFileError
from diffuspeech.vocoder import VocoderCompatibilityError, VocoderInputError

MEL = MelConfig()  # 16 kHz, hop 640 (25 Hz), 80 mels


def chirp(seconds: float = 1.0, sr: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    freq = 200 + 1800 * t / seconds  # 200 Hz -> 2 kHz
    return 0.5 * torch.sin(2 * torch.pi * torch.cumsum(freq, 0) / sr) * (1 + 0.5 * torch.sin(2 * torch.pi * 3 * t))


def write_centroids(path, centroids: torch.Tensor, kind: str = "mel_kmeans", mel: MelConfig = MEL) -> None:
    """The file layout the mel_kmeans tokenizer writes."""
    meta = {"mel_config": mel.to_json(), "kind": kind, "num_units": str(centroids.shape[0])}
    save_file({"centroids": centroids.float().contiguous()}, str(path), metadata=meta)


@pytest.fixture
def codebook(tmp_path):
    """Every frame of a chirp is its own centroid: units 0..T-1 reproduce the chirp's log-mel."""
    frames = log_mel(chirp(), MEL)  # [T, 80]
    path = tmp_path / "centroids.safetensors"
    write_centroids(path, frames)
    return path, frames


def griffinlim(path, **settings):
    return build_component("vocoders", {"name": "griffinlim", "path": str(path), "n_iter": 16, **settings})


def test_reconstructs_the_centroid_spectrogram(codebook):
    path, frames = codebook
    voc = griffinlim(path, smooth_frames=1)
    assert voc.num_units == frames.shape[0] and voc.sample_rate == 16000 and voc.frame_rate == 25.0
    units = torch.arange(frames.shape[0])[None]  # [1, T]
    wav, lengths = voc.decode(units)
    assert wav.shape == (1, frames.shape[0] * 640) and lengths.tolist() == [frames.shape[0] * 640]
    again = log_mel(wav[0], MEL)[: frames.shape[0]]  # [T, 80]
    loud = frames > frames.max() - 6  # bins within ~50 dB of the peak
    error = (again - frames)[loud].abs().mean()
    shuffled = (again - frames[torch.randperm(frames.shape[0])])[loud].abs().mean()
    assert error < 1.0 and error < 0.5 * shuffled


def test_batch_rows_are_independent_and_deterministic(codebook):
    path, frames = codebook
    voc = griffinlim(path)
    torch.manual_seed(0)
    units = torch.randint(0, frames.shape[0], (2, 9))
    wav, lengths = voc.decode(units, torch.tensor([9, 5]))
    assert lengths.tolist() == [9 * 640, 5 * 640] and torch.all(wav[1, 5 * 640 :] == 0)
    single = voc.decode_one(units[1, :5])
    torch.testing.assert_close(wav[1, : 5 * 640], single)
    torch.testing.assert_close(voc.decode(units, torch.tensor([9, 5]))[0], wav)


def test_bad_units_fail_early(codebook):
    path, frames = codebook
    voc = griffinlim(path)
    k = frames.shape[0]
    with pytest.raises(VocoderInputError, match=rf"unit id {k} at row 0, frame 2 is out of range.*\[0, {k}\)"):
        voc.decode(torch.tensor([[0, 1, k, 3]]))
    with pytest.raises(VocoderInputError, match="empty input"):
        voc.decode(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(VocoderInputError, match="integer tensor"):
        voc.decode(torch.zeros(1, 4))
    with pytest.raises(VocoderInputError, match=r"rows \[1\] have \[0\] frames"):
        voc.decode(torch.zeros(2, 4, dtype=torch.long), torch.tensor([4, 0]))
    # ids beyond a row's length (e.g. a mask id in padding) are ignored
    voc.decode(torch.tensor([[1, 2, 3, 99999]]), torch.tensor([3]))


def test_centroids_file_errors(tmp_path):
    with pytest.raises(CentroidsFileError, match="not found"):
        griffinlim(tmp_path / "missing.safetensors")
    wrong = tmp_path / "wrong.safetensors"
    write_centroids(wrong, torch.zeros(4, 80), kind="hubert_kmeans")
    with pytest.raises(CentroidsFileError, match="kind='hubert_kmeans'"):
        griffinlim(wrong)
    narrow = tmp_path / "narrow.safetensors"
    write_centroids(narrow, torch.zeros(4, 40))
    with pytest.raises(CentroidsFileError, match=r"\[K, n_mels=80\]"):
        griffinlim(narrow)


def test_check_compatible_with_tokenizer(codebook):
    path, frames = codebook
    voc = griffinlim(path)
    voc.check_compatible(SimpleNamespace(num_units=frames.shape[0], frame_rate=25.0))
    with pytest.raises(VocoderCompatibilityError, match="produces 500"):
        voc.check_compatible(SimpleNamespace(num_units=500, frame_rate=25.0))
    with pytest.raises(VocoderCompatibilityError, match="50 units/s"):
        voc.check_compatible(SimpleNamespace(num_units=frames.shape[0], frame_rate=50.0))


def test_swap_vocoder_by_config(codebook, tmp_path):
    path, frames = codebook
    base = {"vocoder": {"name": "griffinlim", "path": str(path), "n_iter": 4}}
    units = torch.randint(0, frames.shape[0], (2, 6))
    lengths = torch.tensor([6, 4])
    hifigan_node = {"name": "unit_hifigan", "preset": "tiny", "num_units": frames.shape[0]}
    for cfg in (load_config(base), load_config({"vocoder": hifigan_node})):
        voc = build_component("vocoders", cfg.vocoder)
        wav, sample_lengths = voc.decode(units, lengths)
        assert voc.sample_rate == 16000
        assert sample_lengths.tolist() == [6 * 640, 4 * 640] and wav.shape == (2, 6 * 640)
        assert torch.isfinite(wav).all()
    # a dotlist override changes a setting of the chosen vocoder
    cfg = load_config(base, ["vocoder.smooth_frames=5"])
    assert build_component("vocoders", cfg.vocoder).config.smooth_frames == 5


def test_short_sequences_for_hifigan():
    voc = build_component("vocoders", {"name": "unit_hifigan", "preset": "tiny", "num_units": 10})
    with pytest.raises(VocoderInputError, match="at least 4"):
        voc.decode(torch.tensor([[1, 2, 3]]))
    with pytest.raises(ValueError, match="no duration predictor"):
        build_component("vocoders", {"name": "unit_hifigan", "preset": "tiny", "num_units": 10, "duration_prediction": True})
    with pytest.raises(ValueError, match="num_units must be set"):
        build_component("vocoders", {"name": "unit_hifigan", "preset": "tiny"})


def test_phase_init_and_magnitude_power(codebook):
    """The default phase law reproduces torchaudio's GriffinLim exactly; "uniform" and
    magnitude_power change the audio, stay deterministic and still reconstruct the spectrogram."""
    import torchaudio

    path, frames = codebook
    units = torch.arange(frames.shape[0])
    voc = griffinlim(path, smooth_frames=1, upsample=2)
    magnitude = voc.inverse_mel(voc.log_mel_frames(units).exp().T)
    n = frames.shape[0] * 640
    reference = torchaudio.transforms.GriffinLim(
        n_fft=1024, n_iter=16, win_length=1024, hop_length=320, power=1.0, momentum=0.99, length=n
    )
    torch.manual_seed(0)
    torch.testing.assert_close(voc.decode_one(units), reference(magnitude))
    loud = frames > frames.max() - 6
    for settings in ({"phase_init": "uniform"}, {"magnitude_power": 1.3}, {"phase_init": "uniform", "magnitude_power": 1.3}):
        other = griffinlim(path, smooth_frames=1, upsample=2, **settings)
        wav = other.decode_one(units)
        assert wav.shape == (n,) and torch.isfinite(wav).all()
        assert not torch.allclose(wav, voc.decode_one(units))
        torch.testing.assert_close(other.decode_one(units), wav)  # seeded: same units -> same audio
        again = log_mel(wav, MEL)[: frames.shape[0]]
        shift = (again - frames)[loud].mean()  # magnitude_power rescales the level; compare shapes
        assert (again - frames - shift)[loud].abs().mean() < 1.5
    with pytest.raises(ValueError, match="phase_init"):
        griffinlim(path, phase_init="gaussian")
    with pytest.raises(ValueError, match="magnitude_power"):
        griffinlim(path, magnitude_power=0.0)
