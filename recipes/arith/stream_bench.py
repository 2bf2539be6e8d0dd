"""``diffuspeech bench stream``: streaming TTS of the embedded models, first-chunk latency and tokens/s.

The diffusion model (``--model``, default ``arith-mdm``) speaks the 21 answers in blocks of
``--block-length`` at 1, 4 and 16 steps per block; the autoregressive model of the same size
(``--baseline``, default ``arith-ar``) speaks them one unit per pass. Both stream chunks of
``--block-length`` units (the last chunk of an answer may be shorter). Reported per setting: the
median time to the first audio chunk, generated units per second, and the ratios to the baseline
(measured in the same run, one answer at a time, as a user would hear them).
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from diffuspeech.bench import device_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="arith-mdm", help="the diffusion model (a folder or a registered name)")
    parser.add_argument("--baseline", default="arith-ar", help="the autoregressive model of the same size")
    parser.add_argument("--block-length", type=int, default=8, help="speech units per block")
    parser.add_argument("--steps-per-block", default="1,4,16", help="comma-separated settings to measure")
    parser.add_argument("--limit", type=int, default=21, help="answers to speak (of the 21 number words)")


def _measure(pipe, words: list[str], chunk: int, **overrides) -> dict[str, float]:
    firsts, units, seconds = [], 0, 0.0
    for w in words:
        chunks = list(pipe.stream("tts", {"answer_words": w}, min_chunk=chunk, **overrides))
        audio = [c for c in chunks if c.kind == "audio"]
        firsts.append(audio[0].elapsed_s if audio else chunks[-1].elapsed_s)
        units += int(chunks[-1].value.fields["answer_speech"].numel())
        seconds += chunks[-1].elapsed_s
    return {"first_chunk_ms": 1e3 * statistics.median(firsts), "units_per_s": units / seconds}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from diffuspeech.pipeline import Pipeline

    from .number_words import NUMBER_WORDS

    words = list(NUMBER_WORDS)[: args.limit]
    base = _measure(Pipeline.from_pretrained(args.baseline), words, args.block_length)  # the same chunk size for both
    out: dict[str, Any] = {"device": device_name("cpu"), "answers": len(words), "block_length": args.block_length,
                           "baseline": args.baseline, "baseline_first_chunk_ms": round(base["first_chunk_ms"], 2),
                           "baseline_units_per_s": round(base["units_per_s"], 1)}
    pipe = Pipeline.from_pretrained(args.model)
    for spb in (int(s) for s in args.steps_per_block.split(",")):
        # steps in total = steps per block x blocks of the longest answer budget; the pipeline caps them per target
        budget = max(s.max_len or 0 for s in pipe.task("tts").segments)
        steps = spb * max(1, -(-budget // args.block_length))
        m = _measure(pipe, words, args.block_length, block_length=args.block_length, steps=steps)
        out[f"spb{spb}_first_chunk_ms"] = round(m["first_chunk_ms"], 2)
        out[f"spb{spb}_units_per_s"] = round(m["units_per_s"], 1)
        out[f"spb{spb}_first_chunk_vs_baseline"] = round(m["first_chunk_ms"] / base["first_chunk_ms"], 2)
        out[f"spb{spb}_speed_vs_baseline"] = round(m["units_per_s"] / base["units_per_s"], 2)
    return out
