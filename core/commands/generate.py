"""``diffuspeech generate --task TASK [--model DIR] --out-dir DIR [IN.wav ...] [--text ...]``.

Prints one JSON line per input with the keys ``input``, ``thinking``, ``text`` and ``audio``
(the path of the written wav, or null when the task has no speech output). The default
model is the embedded one (``diffuspeech.recipes.arith.models``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ..audio import AudioError, write_audio
from ..formats import TARGET
from ..modality import SPEECH, SPEECH_FEATURES, TEXT
from ..model import model_help


def configure(p) -> None:
    p.add_argument("inputs", nargs="*", help="input wav files (speech-input tasks)")
    p.add_argument("--task", required=True, help="task name from the model's config, e.g. s2s, s2t, asr, tts")
    p.add_argument("--model", help=model_help())
    p.add_argument("--out-dir", default="generated", help="where <stem>.wav files are written (default ./generated)")
    p.add_argument("--text", action="append", default=[], help="input text (text-input tasks; repeat for several)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the model's generation.steps)")
    p.add_argument("--block-length", type=int, help="semi-autoregressive block length")
    p.add_argument("--temperature", type=float, help="Gumbel temperature (0 = greedy)")
    p.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale")
    p.add_argument("--batch-size", type=int, default=8, help="inputs decoded together (default 8)")
    p.add_argument("--trajectory", action="store_true", help="add each position's reveal step to the JSON (key 'trajectory')")
    p.add_argument("--progress", action="store_true", help="show a progress bar over denoising steps")
    p.add_argument("--stream", action="store_true",
                   help="write each spoken answer in chunks as its blocks finish (<stem>_chunkNN.wav) and report the first-chunk latency")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--allow-version-mismatch", action="store_true", help="load a model saved with other plugin versions")
    p.add_argument("--allow-external-paths", action="store_true", help="trust a model folder whose config points at files outside it")
    p.add_argument(
        "overrides", nargs="*", default=[],
        help="config overrides key=value (e.g. sampler.name=threshold); positional args containing '=' are overrides",
    )
    p.set_defaults(func=run)


def _first_target(task, modality: str, skip: tuple[str, ...] = ()) -> str | None:
    for seg in task.segments:
        if seg.role == TARGET and seg.modality == modality and seg.field not in skip:
            return seg.field
    return None


def unique_stem(stem: str, used: set[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3`` ... when inputs from different folders share a name
    (a/q.wav and b/q.wav must not overwrite each other's answer); records the result in ``used``."""
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}-{k}"
    used.add(name)
    return name


def run(args) -> int:
    overrides = [o for o in args.inputs if "=" in o and not Path(o).exists()] + list(args.overrides)
    inputs = [i for i in args.inputs if i not in overrides]
    from ..pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.model, overrides, args.device, args.allow_version_mismatch, args.allow_external_paths)
    task = pipe.task(args.task)
    conditions = [s for s in task.segments if s.role != TARGET]
    speech_in = [s for s in conditions if s.modality in (SPEECH, SPEECH_FEATURES)]
    text_in = [s for s in conditions if s.modality == TEXT]
    if speech_in and not inputs:
        print(f"error: task {args.task!r} takes speech input: give one or more wav files", file=sys.stderr)
        return 2
    if text_in and not args.text:
        print(f"error: task {args.task!r} takes text input: give --text \"...\"", file=sys.stderr)
        return 2
    if len(speech_in) > 1 or len(text_in) > 1:
        print(f"error: task {args.task!r} has several inputs; use the Python API (diffuspeech.pipeline)", file=sys.stderr)
        return 2
    items: list[tuple[str, dict]] = []
    if speech_in:
        items = [(path, {speech_in[0].field: path}) for path in inputs]
        if text_in:
            print("error: tasks with both speech and text input need the Python API", file=sys.stderr)
            return 2
    else:
        items = [(text, {text_in[0].field: text}) if text_in else (text, {}) for text in (args.text or [""])]
    out_dir = Path(args.out_dir)
    speech_field = _first_target(task, SPEECH)
    text_field = _first_target(task, TEXT, skip=("thinking",))
    overrides_kw = {
        k: v
        for k, v in {"steps": args.steps, "block_length": args.block_length, "temperature": args.temperature, "cfg_scale": args.cfg_scale}.items()
        if v is not None
    }
    if args.stream:
        return _run_streaming(pipe, args, items, speech_field, text_field, overrides_kw, speech_in)
    rates = pipe.vote_rates(task, pipe.defaults.speed_votes)  # generation.speed_votes (model config or override)
    copies = max(1, len(rates))
    failures = 0
    used_stems: set[str] = set()
    for start in range(0, len(items), max(1, args.batch_size)):
        chunk = items[start : start + args.batch_size]
        records: dict[int, dict] = {}
        good = []
        for n, (label, item) in enumerate(chunk):
            try:
                good.append((n, label, pipe.prepare_copies(task, item, label, rates)))  # audio errors name the file
            except (AudioError, ValueError) as exc:
                failures += 1
                records[n] = {"input": label, "error": str(exc)}
        rows = [p for _, _, ps in good for p in ps]
        outputs = pipe.run_prepared(args.task, rows, copies=copies, record_trajectory=args.trajectory, progress=args.progress, **overrides_kw) if good else []
        for (n, label, _), out in zip(good, outputs):
            record = {"input": label, "thinking": out.fields.get("thinking"), "text": out.fields.get(text_field) if text_field else None, "audio": None}
            if speech_field and speech_field in out.audio:
                # always one wav per input (empty when the model produced no units; see "warnings")
                stem = unique_stem(Path(label).stem if speech_in else f"{args.task}_{start + n:04d}", used_stems)
                wav_path = out_dir / f"{stem}.wav"
                wav = out.audio[speech_field]
                if not wav.numel():
                    wav = torch.zeros(max(1, out.sample_rate // 25))  # 40 ms of silence
                write_audio(wav_path, wav, out.sample_rate)
                record["audio"] = str(wav_path)
            if args.trajectory and out.trajectory is not None:
                record["trajectory"] = out.trajectory.tolist()
            if out.agreement is not None:
                record["agreement"] = out.agreement  # share of the speed_votes copies that agreed
            if out.warnings:
                record["warnings"] = out.warnings
            records[n] = record
        for n in sorted(records):
            print(json.dumps(records[n]), flush=True)
    return 1 if failures and failures == len(items) else 0


def _run_streaming(pipe, args, items, speech_field, text_field, overrides_kw, speech_in) -> int:
    """``--stream``: one input at a time; every audio chunk is written as it comes, then the whole answer."""
    out_dir = Path(args.out_dir)
    used: set[str] = set()
    failures = 0
    for n, (label, item) in enumerate(items):
        try:
            chunks = list(pipe.stream(args.task, item, **overrides_kw))
        except (AudioError, ValueError) as exc:
            failures += 1
            print(json.dumps({"input": label, "error": str(exc)}), flush=True)
            continue
        out = chunks[-1].value
        stem = unique_stem(Path(label).stem if speech_in else f"{args.task}_{n:04d}", used)
        audio = [c for c in chunks if c.kind == "audio" and c.field == speech_field]
        record = {"input": label, "thinking": out.fields.get("thinking"), "text": out.fields.get(text_field) if text_field else None,
                  "audio": None, "chunks": [], "first_chunk_s": round(audio[0].elapsed_s, 4) if audio else None,
                  "total_s": round(chunks[-1].elapsed_s, 4)}
        for i, c in enumerate(audio):
            path = write_audio(out_dir / f"{stem}_chunk{i:02d}.wav", c.value if c.value.numel() else torch.zeros(1), c.sample_rate)
            record["chunks"].append({"audio": str(path), "units": int(c.units.numel()), "at_s": round(c.elapsed_s, 4)})
        if speech_field and speech_field in out.audio and out.audio[speech_field].numel():
            record["audio"] = str(write_audio(out_dir / f"{stem}.wav", out.audio[speech_field], out.sample_rate))
        if out.warnings:
            record["warnings"] = out.warnings
        print(json.dumps(record), flush=True)
    return 1 if failures and failures == len(items) else 0
