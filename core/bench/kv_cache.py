"""``diffuspeech bench kv_cache``: Fast-dLLM prefix / dual KV caching against full forwards.

Synthetic part (always): a randomly initialised ``llada`` backbone and a long canvas
(``--canvas`` positions, the first ``--condition`` of them fixed), block decoding with
``--steps-per-block`` steps per block. Reported per mode: wall time of the whole generation,
the speed-up over ``kv_cache=none``, the agreement of the generated tokens with the
no-cache run, and the query positions the backbone ran.

Model part (``--model DIR --data CORPUS``): a trained speech model (e.g. the spoken-arithmetic
one) on the first ``--limit`` rows of ``CORPUS/<split>.jsonl`` (fields ``question_audio``,
``thinking``, ``answer_text``), S2S task: thinking exact match and text-answer accuracy for
each mode, their agreement with the no-cache outputs (same thinking string; same token at each
target position, speech units included), and the engine time (canvas and
decoding; tokenizer and vocoder excluded, they do not depend on the cache).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from ..compose import build_component
from ..sampling.generation import CanvasSpec, generate
from ..sampling.options import DecodeOptions
from . import device_name

MODES = ("none", "prefix", "dual")


def add_arguments(parser) -> None:
    parser.add_argument("--canvas", type=int, default=512, help="synthetic canvas positions")
    parser.add_argument("--condition", type=int, default=128, help="fixed (condition) positions at the start of the canvas")
    parser.add_argument("--block-length", type=int, default=32, help="semi-autoregressive block length")
    parser.add_argument("--steps-per-block", type=int, default=8, help="denoising steps per block")
    parser.add_argument("--preset", default="tiny", help="llada preset of the random synthetic backbone (tiny | small)")
    parser.add_argument("--batch", type=int, default=1, help="synthetic batch size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default); 1 gives stable timings on a busy machine")
    parser.add_argument("--model", default=None, help="saved model folder for the accuracy part (optional)")
    parser.add_argument("--data", default=None, help="corpus folder with <split>.jsonl and audio/ (with --model)")
    parser.add_argument("--split", default="dev", help="manifest name inside --data")
    parser.add_argument("--limit", type=int, default=100, help="rows of the manifest (with --model)")
    parser.add_argument("--batch-size", type=int, default=25, help="rows per generation batch (with --model)")
    parser.add_argument("--model-block-length", type=int, default=8, help="block length for the model part")
    parser.add_argument("--model-steps-per-block", type=int, default=4, help="steps per block for the model part")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _synthetic(args, device: torch.device) -> dict[str, Any]:
    if not 0 <= args.condition < args.canvas:
        raise ValueError(f"--condition must be in [0, --canvas), got {args.condition} and {args.canvas}")
    backbone = build_component(
        "backbones",
        {"name": "llada", "preset": args.preset, "max_sequence_length": max(args.canvas, 64), "seed": 0,
         "device": str(device), "dtype": "bfloat16" if device.type == "cuda" else "float32"},
    ).eval()
    mask_id = backbone.vocab_size - 1
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, mask_id, (args.batch, args.condition), generator=g)
    target = args.canvas - args.condition
    tokens = torch.cat([prompt, torch.full((args.batch, target), mask_id)], dim=1).to(device)
    num_blocks = math.ceil(target / args.block_length)
    steps = num_blocks * args.steps_per_block
    canvas = CanvasSpec(tokens=tokens, mask_id=mask_id)
    generate(backbone, canvas, DecodeOptions(steps=num_blocks, block_length=args.block_length, kv_cache="dual"))  # warm-up
    out: dict[str, Any] = {
        "synthetic_backbone": f"llada {args.preset} (random weights)",
        "synthetic_canvas": args.canvas,
        "synthetic_target": target,
        "block_length": args.block_length,
        "steps": steps,
    }
    ref = None
    for mode in MODES:
        _sync(device)
        t0 = time.perf_counter()
        res = generate(backbone, canvas, DecodeOptions(steps=steps, block_length=args.block_length, kv_cache=mode))
        _sync(device)
        out[f"{mode}_s"] = round(time.perf_counter() - t0, 4)
        out[f"{mode}_positions"] = res.positions_computed
        if mode == "none":
            ref = res.tokens
        else:
            sel = tokens == mask_id
            out[f"{mode}_agreement"] = round(float((res.tokens[sel] == ref[sel]).float().mean()), 4)
            out[f"{mode}_speedup"] = round(out["none_s"] / out[f"{mode}_s"], 2)
            out[f"{mode}_cached_forwards"] = res.cached_forwards
    return out


def _model(args, device: torch.device) -> dict[str, Any]:
    from ..formats import TARGET, split_targets
    from ..pipeline import Pipeline

    data = Path(args.data)
    manifest = data / f"{args.split}.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: pass --data, a corpus folder holding {args.split}.jsonl")
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()][: args.limit]
    pipe = Pipeline.from_pretrained(args.model, device=str(device))
    model, task = pipe.model, pipe.task("s2s")
    lengths = {s.field: s.max_len for s in task.segments if s.role == TARGET}
    num_blocks = math.ceil(sum(lengths.values()) / args.model_block_length)  # every row has the same target budget
    steps = num_blocks * args.model_steps_per_block
    prepared = [pipe.prepare_inputs(task, {"question_speech": str(data / r["question_audio"])}, f"row {i}")[0]
                for i, r in enumerate(rows)]
    sampler = model.sampler if model.sampler is not None else "low_confidence"
    out: dict[str, Any] = {"model": str(args.model), "rows": len(rows), "model_block_length": args.model_block_length,
                           "model_steps": steps, "sampler": type(sampler).__name__ if not isinstance(sampler, str) else sampler}
    fields_by_mode: dict[str, list[dict[str, Any]]] = {}
    targets_by_mode: dict[str, list[torch.Tensor]] = {}
    for mode in MODES:
        seconds, fields, targets = 0.0, [], []
        for start in range(0, len(prepared), args.batch_size):
            chunk = prepared[start : start + args.batch_size]
            _sync(device)
            t0 = time.perf_counter()
            spec, batch = pipe.canvas("s2s", chunk, lengths)
            res = generate(
                model.backbone, spec,
                DecodeOptions(steps=steps, block_length=args.model_block_length, kv_cache=mode, seed=0),
                sampler=sampler, scheduler=model.scheduler,
            )
            _sync(device)
            seconds += time.perf_counter() - t0
            targets.append(res.tokens.cpu()[batch["target"]])  # [N] every row's target tokens, row-major
            for i in range(len(chunk)):
                valid = batch["valid"][i]
                fields.append(split_targets(task, res.tokens[i].cpu()[valid], batch["segment"][i][valid], model.vocab))
        fields_by_mode[mode], targets_by_mode[mode] = fields, targets
        n = len(rows)
        out[f"{mode}_thinking_exact_match"] = round(sum(f.get("thinking") == r["thinking"] for f, r in zip(fields, rows)) / n, 4)
        out[f"{mode}_answer_text_accuracy"] = round(sum(f.get("answer_text") == r["answer_text"] for f, r in zip(fields, rows)) / n, 4)
        out[f"{mode}_engine_s"] = round(seconds, 3)
        if mode != "none":
            base = fields_by_mode["none"]
            out[f"{mode}_same_thinking_as_none"] = round(sum(a.get("thinking") == b.get("thinking") for a, b in zip(fields, base)) / n, 4)
            same = torch.cat([a == b for a, b in zip(targets, targets_by_mode["none"])])  # [N_total] bool
            out[f"{mode}_target_token_agreement"] = round(float(same.float().mean()), 4)
            out[f"{mode}_model_speedup"] = round(out["none_engine_s"] / seconds, 2)
    return out


@torch.no_grad()
def run(args) -> dict[str, Any]:
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"device": device_name(device)}
    result.update(_synthetic(args, device))
    if args.model or args.data:
        if not (args.model and args.data):
            raise ValueError("the model part needs both --model (a saved model folder) and --data (its corpus folder)")
        result.update(_model(args, device))
    return result
