"""``diffuspeech bench judge``: the number judge's accuracy on the assistant voice, its
robustness (speed, pitch, level, additive noise), false accepts on noise, and its latency."""

from __future__ import annotations

import time

import numpy as np

from diffuspeech.bench import device_name


def add_arguments(parser) -> None:
    parser.add_argument("--noise-clips", type=int, default=96, help="noise clips per noise type (default 96)")
    parser.add_argument("--seed", type=int, default=0)


def _noises(rng: np.random.Generator, count: int):
    """(kind, waveform at 16 kHz) pairs: white, pink-ish, brown, hum, tone, clicks, AM noise."""
    for i in range(count):
        n = int(rng.choice([0.3, 1.0, 2.0, 4.0]) * 16000)
        amp = float(rng.choice([0.001, 0.01, 0.05, 0.2, 0.5, 0.9]))
        t = np.arange(n) / 16000
        white = rng.standard_normal(n)
        brown = np.cumsum(rng.standard_normal(n))
        brown -= np.linspace(brown[0], brown[-1], n)
        pink = np.convolve(white, np.ones(8) / 8, mode="same")
        yield "white", white * amp
        yield "pink", pink / (np.abs(pink).max() + 1e-9) * amp
        yield "brown", brown / (np.abs(brown).max() + 1e-9) * amp
        yield "hum", amp * (np.sin(2 * np.pi * 120 * t) + 0.5 * np.sin(2 * np.pi * 240 * t))
        yield "tone", amp * np.sin(2 * np.pi * (300 + 50 * i % 700) * t)
        yield "clicks", amp * 5 * (rng.random(n) < 0.002) * rng.standard_normal(n)
        yield "am_noise", amp * white * np.abs(np.sin(2 * np.pi * 3 * t))


def run(args) -> dict:
    from .corpus import ASSISTANT_PITCH, ASSISTANT_SPEED, ASSISTANT_VOICE
    from .espeak import get_espeak
    from .judge import get_judge
    from .number_words import NUMBER_WORDS

    tts, judge = get_espeak(), get_judge()
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    canon = {w: tts.synthesize(w, ASSISTANT_VOICE, ASSISTANT_SPEED, ASSISTANT_PITCH) for w in NUMBER_WORDS}
    synth_ms = (time.perf_counter() - t0) / len(canon) * 1e3
    t0 = time.perf_counter()
    assistant = sum(judge(wav, sr) == w for w, (wav, sr) in canon.items())
    judge_ms = (time.perf_counter() - t0) / len(canon) * 1e3

    def score(pairs) -> str:
        pairs = list(pairs)
        return f"{sum(judge(x, sr) == w for w, x, sr in pairs)}/{len(pairs)}"

    speeds = score((w, *tts.synthesize(w, ASSISTANT_VOICE, s, ASSISTANT_PITCH)) for w in NUMBER_WORDS for s in (120, 135, 165, 180))
    pitches = score((w, *tts.synthesize(w, ASSISTANT_VOICE, ASSISTANT_SPEED, p)) for w in NUMBER_WORDS for p in (30, 70))
    quiet = score((w, x * 0.02, sr) for w, (x, sr) in canon.items())

    def noisy(snr_db: float) -> str:
        out = []
        for w, (x, sr) in canon.items():
            noise = rng.standard_normal(len(x)).astype(np.float32) * np.sqrt((x**2).mean() / 10 ** (snr_db / 10))
            out.append((w, x + noise, sr))
        return score(out)

    false_accepts: dict[str, int] = {}
    total = 0
    for kind, x in _noises(rng, args.noise_clips):
        total += 1
        if judge(np.clip(x, -1, 1).astype(np.float32), 16000) is not None:
            false_accepts[kind] = false_accepts.get(kind, 0) + 1
    return {
        "assistant_voice_accuracy": f"{assistant}/{len(NUMBER_WORDS)}",
        "speeds_120_135_165_180": speeds,
        "pitches_30_70": pitches,
        "level_x0.02": quiet,
        "white_noise_snr_20db": noisy(20),
        "white_noise_snr_10db": noisy(10),
        "noise_false_accepts": f"{sum(false_accepts.values())}/{total}",
        "noise_false_accepts_by_kind": false_accepts,
        "silence": judge(np.zeros(16000, np.float32), 16000),
        "judge_ms_per_clip": round(judge_ms, 1),
        "espeak_ms_per_word": round(synth_ms, 2),
        "device": device_name("cpu"),
    }
