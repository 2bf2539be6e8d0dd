"""core/audio.py: reading every kind of good and bad file, resampling, writing, chunking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from diffuspeech.audio import (
    AudioError,
    audio_info,
    check_waveform,
    chunk_spans,
    find_audio_files,
    is_silent,
    load_audio,
    write_audio,
)


def tone(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * math.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize(
    "subtype, tol",
    [("PCM_U8", 1 / 64), ("PCM_16", 1e-4), ("PCM_24", 1e-6), ("PCM_32", 1e-8), ("FLOAT", 0.0), ("DOUBLE", 0.0)],
)
def test_pcm_and_float_files_read_back(tmp_path, subtype, tol):
    x = tone(440, 16000, 0.25)
    path = tmp_path / f"x_{subtype}.wav"
    sf.write(path, x, 16000, subtype=subtype)
    wav = load_audio(path, 16000)
    assert wav.dtype == torch.float32 and wav.shape == (x.size,)
    assert float((wav - torch.from_numpy(x)).abs().max()) <= tol + 1e-7
    assert audio_info(path).subtype == subtype


def test_flac_and_ogg(tmp_path):
    x = tone(300, 16000, 0.3)
    for name in ("x.flac", "x.ogg"):
        sf.write(tmp_path / name, x, 16000)
        wav = load_audio(tmp_path / name, 16000)
        assert abs(wav.numel() - x.size) <= 1024  # vorbis may pad to its block size
    flac = load_audio(tmp_path / "x.flac", 16000)
    assert float((flac - torch.from_numpy(x)).abs().max()) < 1e-4


def test_stereo_is_downmixed_or_kept(tmp_path):
    left, right = tone(200, 16000, 0.2), tone(500, 16000, 0.2, amp=0.25)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 16000, subtype="FLOAT")
    mono = load_audio(tmp_path / "s.wav", 16000)
    assert torch.allclose(mono, torch.from_numpy((left + right) / 2), atol=1e-7)
    both = load_audio(tmp_path / "s.wav", 16000, mono=False)
    assert both.shape == (2, left.size)


def test_resampling_matches_an_independent_polyphase_resampler(tmp_path):
    x = tone(440, 22050, 0.5)
    sf.write(tmp_path / "x.wav", x, 22050, subtype="FLOAT")
    wav = load_audio(tmp_path / "x.wav", 16000)
    ref = resample_poly(x.astype(np.float64), 320, 441)  # 22050 * 320 / 441 = 16000
    assert abs(wav.numel() - ref.size) <= 1
    n = min(wav.numel(), ref.size)
    mid = slice(200, n - 200)  # filters differ only near the edges
    assert np.abs(wav.numpy()[mid] - ref[mid]).max() < 5e-3
    # the tone stays at 440 Hz
    spectrum = np.abs(np.fft.rfft(wav.numpy()))
    assert abs(np.argmax(spectrum) * 16000 / wav.numel() - 440) < 3
    assert load_audio(tmp_path / "x.wav", None).numel() == x.size  # None keeps the file's rate


def test_missing_and_non_audio_files_name_the_file(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: file not found"):
        load_audio(tmp_path / "nope.wav", 16000)
    (tmp_path / "text.wav").write_text("this is not audio")
    with pytest.raises(AudioError, match=r"text\.wav: not a readable audio file"):
        load_audio(tmp_path / "text.wav", 16000)
    with pytest.raises(AudioError, match="not a file"):
        load_audio(tmp_path, 16000)
    assert issubclass(AudioError, ValueError)


def test_truncated_files_are_detected(tmp_path):
    sf.write(tmp_path / "full.wav", tone(440, 16000, 0.5), 16000, subtype="PCM_16")
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"cut\.wav: truncated file: its header declares 8000 samples"):
        load_audio(tmp_path / "cut.wav", 16000)
    (tmp_path / "header.wav").write_bytes(data[:30])
    with pytest.raises(AudioError, match=r"header\.wav: not a readable audio file"):
        load_audio(tmp_path / "header.wav", 16000)
    sf.write(tmp_path / "full.flac", tone(440, 16000, 1.0), 16000)
    flac = (tmp_path / "full.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(flac[: len(flac) // 2])
    with pytest.raises(AudioError, match=r"cut\.flac: truncated or corrupt"):
        load_audio(tmp_path / "cut.flac", 16000)


def test_empty_nan_inf_and_silent(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty\.wav: contains no samples"):
        load_audio(tmp_path / "empty.wav", 16000)
    bad = tone(440, 16000, 0.1)
    bad[37] = np.nan
    sf.write(tmp_path / "nan.wav", bad, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: contains NaN or infinite samples \(first at sample 37\)"):
        load_audio(tmp_path / "nan.wav", 16000)
    bad[37] = np.inf
    sf.write(tmp_path / "inf.wav", bad, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="infinite"):
        load_audio(tmp_path / "inf.wav", 16000)
    sf.write(tmp_path / "silent.wav", np.zeros(1600, np.float32), 16000)
    silent = load_audio(tmp_path / "silent.wav", 16000)  # silence is valid audio
    assert is_silent(silent) and not is_silent(torch.from_numpy(tone(440, 16000, 0.1)))
    assert is_silent(torch.full((100,), 1e-4)) and not is_silent(torch.full((100,), 1e-2))
    with pytest.raises(AudioError, match="row 3: contains no samples"):
        check_waveform(torch.zeros(0), "row 3")


def test_write_audio_is_atomic_and_round_trips(tmp_path):
    wav = torch.from_numpy(tone(440, 16000, 0.2))
    out = write_audio(tmp_path / "sub" / "o.wav", wav, 16000, subtype="FLOAT")
    assert torch.equal(load_audio(out, 16000), wav)
    write_audio(tmp_path / "o.flac", torch.stack([wav, -wav]), 16000)
    assert load_audio(tmp_path / "o.flac", 16000, mono=False).shape == (2, wav.numel())
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["o.flac", "o.wav", "sub"]  # no temporary files left
    with pytest.raises(AudioError, match="NaN"):
        write_audio(tmp_path / "bad.wav", torch.tensor([0.0, float("nan")]), 16000)
    assert not (tmp_path / "bad.wav").exists()
    assert [p.name for p in find_audio_files(tmp_path)] == ["o.flac", "o.wav"]


def test_chunk_spans():
    assert chunk_spans(0, 100) == []
    assert chunk_spans(50, 100) == [(0, 50)]
    assert chunk_spans(1000, 320, align=64) == [(0, 320), (320, 640), (640, 1000)]  # a 40-sample tail is merged
    assert chunk_spans(1100, 320, align=64) == [(0, 320), (320, 640), (640, 960), (960, 1100)]
    spans = chunk_spans(10_000, 1000, align=640)
    assert spans[0] == (0, 640) and all(s % 640 == 0 for s, _ in spans)
    assert spans[-1][1] == 10_000 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
