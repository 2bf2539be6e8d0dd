"""espeak-ng through espeakng-loader: voices, variants, synthesis, and the errors."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from diffuspeech.recipes.arith.espeak import EspeakError, get_espeak, locate_espeak


@pytest.fixture(scope="module")
def tts():
    return get_espeak()


def _median_f0(wav: np.ndarray, sr: int) -> float:
    """Median pitch over loud 40 ms frames: the highest autocorrelation peak after its first
    zero crossing, below a 60 Hz period."""
    n, hop = int(0.04 * sr), int(0.01 * sr)
    frames = np.lib.stride_tricks.sliding_window_view(wav, n)[::hop]
    frames = frames[(frames**2).mean(1) > 0.1 * (frames**2).mean(1).max()]
    f0 = []
    for f in frames:
        f = f - f.mean()
        ac = np.correlate(f, f, "full")[n - 1 :]
        first_negative = int(np.argmax(ac < 0))
        f0.append(sr / (first_negative + int(np.argmax(ac[first_negative : sr // 60]))))
    return float(np.median(f0))


def test_lists_english_voices_and_variants(tts):
    languages = {v.language for v in tts.voices()}
    assert {"en-us", "en-gb", "en-gb-scotland"} <= languages
    variants = {v.id: v for v in tts.variants()}
    assert variants["f2"].name == "female2" and variants["f2"].gender == "female"
    assert variants["m3"].name == "male3"
    assert len(variants) > 50


def test_synthesize_returns_float_waveform(tts):
    wav, sr = tts.synthesize("what is two plus three", voice="en-us+f2", speed=150)
    assert sr == tts.sample_rate == 22050
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert 0.8 < len(wav) / sr < 4.0
    assert 0.05 < np.abs(wav).max() <= 1.0


def test_speed_and_pitch_change_the_audio(tts):
    slow, sr = tts.synthesize("what is seven minus four", voice="en-us+m3", speed=100)
    fast, _ = tts.synthesize("what is seven minus four", voice="en-us+m3", speed=300)
    assert len(fast) < 0.6 * len(slow)
    low, _ = tts.synthesize("aaaah", voice="en-us+m3", pitch=30)
    high, _ = tts.synthesize("aaaah", voice="en-us+m3", pitch=90)
    assert _median_f0(high, sr) > 1.3 * _median_f0(low, sr)


def test_every_accent_accepts_a_variant(tts):
    # "en-gb" is a language code whose voice file is "gmw/en": it must still combine with variants
    for lang in ("en-gb", "en-us", "en-gb-x-rp", "en-029"):
        wav, _ = tts.synthesize("four", voice=f"{lang}+croak")
        assert len(wav) > 1000


def test_unknown_voice_is_an_error(tts):
    with pytest.raises(EspeakError, match="no voice variant 'nosuch'"):
        tts.synthesize("hello", voice="en-us+nosuch")
    with pytest.raises(EspeakError, match="no language voice 'en-xx'.*en-us"):
        tts.synthesize("hello", voice="en-xx")
    with pytest.raises(EspeakError, match="speed must be 80..450"):
        tts.synthesize("hello", speed=20)
    assert tts.check_voice("EN-US+F2") == "en-us+f2"


def test_threads_share_the_engine(tts):
    results: dict[int, int] = {}

    def work(i: int) -> None:
        for _ in range(5):
            wav, _ = tts.synthesize("what is nine plus one", voice="en-us+m1")
        results[i] = len(wav)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ref, _ = tts.synthesize("what is nine plus one", voice="en-us+m1")
    assert len(results) == 4
    # the library's pitch-flutter state drifts a few samples between calls; nothing else may differ
    assert all(abs(n - len(ref)) < 0.01 * len(ref) for n in results.values())


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import now raises ImportError
    with pytest.raises(EspeakError, match=r"pip install espeakng-loader"):
        locate_espeak()


def test_missing_voice_data_names_the_install_command(tmp_path):
    library, _ = locate_espeak()
    with pytest.raises(EspeakError, match=r"voice data is missing.*pip install espeakng-loader"):
        locate_espeak(library_path=library, data_path=tmp_path)
    with pytest.raises(EspeakError, match=r"library not found.*pip install espeakng-loader"):
        locate_espeak(library_path=tmp_path / "libespeak-ng.so", data_path=tmp_path)
