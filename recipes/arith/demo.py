"""``diffuspeech demo``: hear a spoken question, think in text, answer in speech.

Without ``--audio`` a random arithmetic question is spoken by a random (non-reserved)
espeak-ng voice. The answer is written as a wav and checked by the pocketsphinx judge.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import torch

from diffuspeech.model import model_help


def configure(p) -> None:
    p.add_argument("--audio", help="a question wav (default: a random question spoken by espeak-ng)")
    p.add_argument("--model", help=model_help())
    p.add_argument("--out-dir", default="demo-out", help="where question.wav and answer.wav go (default ./demo-out)")
    p.add_argument("--seed", type=int, help="pick the question and voice with this seed")
    p.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    p.set_defaults(func=run)


def _speak_random_question(out_dir: Path, seed: int | None) -> tuple[Path, str, str]:
    from diffuspeech.audio import write_audio

    from .corpus import EXCLUDED_VARIANTS, LANGUAGES, all_questions, near_reserved, usable_variants
    from .espeak import get_espeak, locate_espeak
    from .judge import resample_to

    rng = random.Random(seed)
    question = rng.choice(all_questions())
    tts = get_espeak()
    variants = tts.variants()
    excluded = dict(EXCLUDED_VARIANTS) | near_reserved(variants, locate_espeak()[1])
    variant = rng.choice(usable_variants(variants, excluded))
    voice = f"{rng.choice(LANGUAGES[:2])}+{variant.id}"
    wav, sr = tts.synthesize(question.text, voice=voice, speed=rng.randint(140, 180), pitch=rng.randint(35, 65))
    path = out_dir / "question.wav"
    write_audio(path, torch.from_numpy(resample_to(wav, sr, 16000)), 16000)
    return path, question.text, voice


def run(args) -> int:
    from . import require_extra

    require_extra("diffuspeech demo")
    from diffuspeech.audio import AudioError, write_audio
    from diffuspeech.pipeline import Pipeline

    from .espeak import EspeakError
    from .judge import get_judge

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.audio:
        question_wav, said = Path(args.audio), None
    else:
        try:
            question_wav, said, voice = _speak_random_question(out_dir, args.seed)
        except EspeakError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"question: \"{said}\" (espeak-ng voice {voice}) -> {question_wav}")
    pipe = Pipeline.from_pretrained(args.model)
    try:
        out = pipe.run("s2s", {"question_speech": str(question_wav)}, **({"steps": args.steps} if args.steps else {}))
    except AudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for w in out.warnings:
        print(f"warning: {w}")
    print(f"thinking (silent): {out.fields.get('thinking')!r}")
    print(f"answer (text):     {out.fields.get('answer_text')!r}")
    wav = out.audio.get("answer_speech")
    if wav is None or not wav.numel():
        print("answer (speech):   the model produced no speech units")
        return 0
    answer_wav = write_audio(out_dir / "answer.wav", wav, out.sample_rate)
    heard = get_judge()(wav, out.sample_rate)
    print(f"answer (speech):   {answer_wav} ({wav.numel() / out.sample_rate:.2f} s)")
    print(f"the judge heard:   {heard or 'nothing it recognises as a number'}")
    return 0
