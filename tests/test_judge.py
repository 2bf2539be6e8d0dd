"""The pocketsphinx number judge on real espeak-ng audio, noise and silence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffuspeech.recipes.arith.corpus import ASSISTANT_PITCH, ASSISTANT_SPEED, ASSISTANT_VOICE
from diffuspeech.recipes.arith.espeak import get_espeak
from diffuspeech.recipes.arith.judge import get_judge, judge, number_grammar
from diffuspeech.recipes.arith.number_words import NUMBER_WORDS


@pytest.fixture(scope="module")
def answers() -> dict[str, tuple[np.ndarray, int]]:
    tts = get_espeak()
    return {
        w: tts.synthesize(w, voice=ASSISTANT_VOICE, speed=ASSISTANT_SPEED, pitch=ASSISTANT_PITCH) for w in NUMBER_WORDS
    }


def test_grammar_is_the_21_number_words():
    rule = number_grammar().split("public <number> = ")[1].rstrip(";\n")
    assert rule.split(" | ") == list(NUMBER_WORDS) and len(NUMBER_WORDS) == 21


def test_hears_all_21_answers_in_the_assistant_voice(answers):
    heard = {w: judge(wav, sr) for w, (wav, sr) in answers.items()}
    assert heard == {w: w for w in NUMBER_WORDS}


@pytest.mark.parametrize("seconds", [0.3, 1.0, 3.0])
@pytest.mark.parametrize("amplitude", [0.003, 0.05, 0.5])
def test_white_noise_is_not_a_number(seconds, amplitude):
    rng = np.random.default_rng(int(seconds * 10 + amplitude * 1000))
    noise = (rng.standard_normal(int(seconds * 16000)) * amplitude).astype(np.float32)
    assert judge(noise, 16000) is None


def test_silence_hum_and_broken_input_are_not_numbers():
    t = np.arange(16000) / 16000
    hum = (0.2 * np.sin(2 * np.pi * 120 * t) + 0.1 * np.sin(2 * np.pi * 240 * t)).astype(np.float32)
    hearing = get_judge().listen(hum, 16000)
    assert hearing.word is None and hearing.reason != "ok"
    assert judge(np.zeros(16000, np.float32), 16000) is None
    assert get_judge().listen(np.zeros(16000, np.float32), 16000).reason == "silent"
    assert judge(np.zeros(0, np.float32), 16000) is None
    assert judge(np.full(8000, np.nan, np.float32), 16000) is None


def test_input_forms_rate_level_and_channels(answers):
    wav, sr = answers["seventeen"]
    x = torch.from_numpy(wav)
    assert judge(x, sr) == "seventeen"  # torch input
    assert judge(torch.stack([x, x]), sr) == "seventeen"  # [channels, samples]
    assert judge(wav * 0.02, sr) == "seventeen"  # quiet: the judge normalises the level
    from diffuspeech.recipes.arith.judge import resample_to

    assert judge(resample_to(wav, sr, 44100), 44100) == "seventeen"
    assert judge(resample_to(wav, sr, 8000), 8000) == "seventeen"


def test_noisy_speech_is_still_heard(answers):
    rng = np.random.default_rng(0)
    ok = 0
    for w in ("three", "eight", "twelve", "twenty"):
        wav, sr = answers[w]
        noise = rng.standard_normal(len(wav)).astype(np.float32) * np.sqrt((wav**2).mean() / 100)  # 20 dB SNR
        ok += judge(wav + noise, sr) == w
    assert ok >= 3
