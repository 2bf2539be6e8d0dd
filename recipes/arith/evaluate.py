"""``diffuspeech eval arith``: the spoken-arithmetic model on a dev manifest.

Metrics (each over the same rows):

- ``spoken_answer_accuracy``: S2S answer audio -> pocketsphinx judge == the answer's number word
- ``thinking_exact_match``: S2S thinking trace == "A op B = C"
- ``s2s_text_accuracy``: the S2S text answer == C
- ``s2t_accuracy``: S2T text answer == C
- ``asr_wer``: question transcripts (ASR task) against the question text (jiwer)
- ``tts_intelligibility``: TTS of each answer's words -> judge == the words (21 answers)
- ``resynthesis_ceiling``: assistant-voice answer audio -> tokenizer -> vocoder -> judge
- ``ground_truth_ceiling``: assistant-voice answer audio -> judge
- ``forward_passes_per_token``: network evaluations per generated target token (S2S; every
  speed-vote copy counts)
- ``speed_vote_agreement`` (with ``generation.speed_votes``): mean share of the copies that agreed

Writes ``metrics.json``, ``metrics.md`` and ``trajectory.png`` (one example's denoising
order: which position was revealed at which step, text vs speech).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from tqdm import tqdm

from diffuspeech.audio import load_audio
from diffuspeech.modality import MODALITY_CODE

from .corpus import read_manifest
from .judge import get_judge


@dataclass
class ArithEvalConfig:
    data: str = "arith-corpus"  # corpus folder (dev.jsonl + audio/)
    split: str = "dev"  # manifest name: dev.jsonl (or any <split>.jsonl in the folder)
    model: Optional[str] = None  # saved model folder; None = the embedded default
    out: str = "eval-arith"  # where metrics.json / metrics.md / trajectory.png go
    limit: Optional[int] = None  # first N rows (None = all)
    batch_size: int = 32
    overrides: list[str] = field(default_factory=list)  # model config overrides (generation.steps=8, sampler.name=threshold, ...)
    tasks: tuple[str, ...] = ("s2s", "s2t", "asr", "tts")  # which evaluations to run
    progress: bool = True


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _plot_trajectory(out, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traj, mod, tgt = out.trajectory, out.modality, out.target
    pos = torch.nonzero(tgt).flatten()
    steps = traj[pos]
    colors = ["tab:blue" if int(mod[p]) == MODALITY_CODE["text"] else "tab:orange" for p in pos]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.scatter(pos.numpy(), steps.numpy(), c=colors, s=18)
    ax.set_xlabel("canvas position")
    ax.set_ylabel("step revealed")
    ax.set_title(title, fontsize=9)
    ax.scatter([], [], c="tab:blue", label="text (thinking, answer)")
    ax.scatter([], [], c="tab:orange", label="speech (answer units)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def speaker_breakdown(rows: list[dict], per_row: list[dict], min_rows: int = 5) -> dict[str, Any]:
    """S2S accuracy on the voices training never heard (dev rows of held-out variants) and per voice
    variant, with the worst variant (among those with at least ``min_rows`` rows)."""
    by_variant: dict[str, list[int]] = {}
    unseen = [0, 0, 0]  # spoken, thinking, rows
    for r, p in zip(rows, per_row):
        ok_spoken, ok_think = int(p.get("heard") == r["answer_words"]), int(p.get("thinking") == r["thinking"])
        acc = by_variant.setdefault(str(r.get("variant", "?")), [0, 0, 0])
        acc[0], acc[1], acc[2] = acc[0] + ok_spoken, acc[1] + ok_think, acc[2] + 1
        if r.get("dev_reason") == "held-out variant":
            unseen[0], unseen[1], unseen[2] = unseen[0] + ok_spoken, unseen[1] + ok_think, unseen[2] + 1
    out: dict[str, Any] = {}
    if unseen[2]:
        out.update(unseen_speaker_rows=unseen[2], unseen_speaker_spoken_accuracy=unseen[0] / unseen[2],
                   unseen_speaker_thinking_exact=unseen[1] / unseen[2])
    counted = {v: a for v, a in by_variant.items() if a[2] >= min_rows}
    if counted:
        worst = min(counted, key=lambda v: (counted[v][0] / counted[v][2], v))
        out.update(worst_variant=worst, worst_variant_spoken_accuracy=counted[worst][0] / counted[worst][2],
                   worst_variant_rows=counted[worst][2])
    out["spoken_accuracy_by_variant"] = {v: round(a[0] / a[2], 3) for v, a in sorted(by_variant.items())}
    return out


def evaluate(cfg: ArithEvalConfig) -> dict[str, Any]:
    from diffuspeech.pipeline import Pipeline

    data = Path(cfg.data)
    manifest = data / f"{cfg.split}.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: run `diffuspeech recipe arith prepare --out {data}` first")
    rows = read_manifest(manifest)[: cfg.limit]
    if not rows:
        raise ValueError(f"{manifest} has no rows")
    pipe = Pipeline.from_pretrained(cfg.model, list(cfg.overrides))
    judge = get_judge()
    sr = pipe.model.tokenizer.sample_rate
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"rows": len(rows), "data": str(manifest), "overrides": list(cfg.overrides)}
    per_row: list[dict[str, Any]] = [{"id": r["id"], "voice": r.get("voice")} for r in rows]
    t0 = time.perf_counter()
    bar = tqdm(total=len(rows) * len([t for t in cfg.tasks if t != "tts"]), desc="eval arith", unit="q", disable=not cfg.progress)

    if "s2s" in cfg.tasks:
        spoken = think = text = 0
        passes = tokens = 0
        agreements: list[float] = []
        first = None
        for chunk_idx, chunk in enumerate(_batches(list(range(len(rows))), cfg.batch_size)):
            inputs = [{"question_speech": str(data / rows[i]["question_audio"])} for i in chunk]
            outs = pipe.run_batch("s2s", inputs, record_trajectory=chunk_idx == 0)
            for i, o in zip(chunk, outs):
                r = rows[i]
                wav = o.audio.get("answer_speech")
                heard = judge(wav, o.sample_rate) if wav is not None and wav.numel() else None
                per_row[i].update(thinking=o.fields.get("thinking"), text=o.fields.get("answer_text"), heard=heard)
                if o.agreement is not None:  # generation.speed_votes
                    per_row[i]["agreement"] = o.agreement
                    agreements.append(o.agreement)
                spoken += heard == r["answer_words"]
                think += o.fields.get("thinking") == r["thinking"]
                text += o.fields.get("answer_text") == r["answer_text"]
                tokens += int(o.target.sum())
                if first is None:
                    first = (o, r)
            passes += outs[0].forward_passes * len(outs)
            bar.update(len(chunk))
        n = len(rows)
        metrics.update(
            spoken_answer_accuracy=spoken / n,
            thinking_exact_match=think / n,
            s2s_text_accuracy=text / n,
            forward_passes_per_token=passes / max(1, tokens),
        )
        metrics.update(speaker_breakdown(rows, per_row))
        if agreements:
            metrics["speed_vote_agreement"] = sum(agreements) / len(agreements)
        if first is not None and first[0].trajectory is not None:
            o, r = first
            title = f"{r['question_text']} -> thinking {o.fields.get('thinking')!r}, answer {o.fields.get('answer_text')!r}"
            _plot_trajectory(o, out_dir / "trajectory.png", title)
            metrics["trajectory_png"] = str(out_dir / "trajectory.png")

    if "s2t" in cfg.tasks:
        ok = 0
        for chunk in _batches(list(range(len(rows))), cfg.batch_size):
            outs = pipe.run_batch("s2t", [{"question_speech": str(data / rows[i]["question_audio"])} for i in chunk])
            for i, o in zip(chunk, outs):
                per_row[i]["s2t"] = o.fields.get("answer_text")
                ok += o.fields.get("answer_text") == rows[i]["answer_text"]
            bar.update(len(chunk))
        metrics["s2t_accuracy"] = ok / len(rows)

    if "asr" in cfg.tasks:
        import jiwer

        hyps, refs = [], []
        for chunk in _batches(list(range(len(rows))), cfg.batch_size):
            outs = pipe.run_batch("asr", [{"question_speech": str(data / rows[i]["question_audio"])} for i in chunk])
            for i, o in zip(chunk, outs):
                hyp = o.fields.get("question_text") or ""
                per_row[i]["asr"] = hyp
                hyps.append(hyp if hyp.strip() else "<empty>")
                refs.append(rows[i]["question_text"])
            bar.update(len(chunk))
        metrics["asr_wer"] = jiwer.wer(refs, hyps)
    bar.close()

    answers = sorted({(r["answer_audio"], r["answer_words"]) for r in read_manifest(manifest)})
    if "tts" in cfg.tasks:
        outs = pipe.run_batch("tts", [{"answer_words": w} for _, w in answers])
        heard = [judge(o.audio["answer_speech"], o.sample_rate) if o.audio["answer_speech"].numel() else None for o in outs]
        metrics["tts_intelligibility"] = sum(h == w for h, (_, w) in zip(heard, answers)) / len(answers)
    gt = resyn = 0
    tok, voc = pipe.model.tokenizer, pipe.model.vocoder
    if hasattr(tok, "with_all_units"):  # answers are read onto every unit, as the recipe made its targets
        tok = tok.with_all_units()
    for path, words in answers:
        wav = load_audio(data / path, sr)
        gt += judge(wav, sr) == words
        resyn += judge(voc.decode_one(tok.encode_one(wav)), voc.sample_rate) == words
    metrics["ground_truth_ceiling"] = gt / len(answers)
    metrics["resynthesis_ceiling"] = resyn / len(answers)
    metrics["seconds"] = round(time.perf_counter() - t0, 1)

    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with open(out_dir / "rows.jsonl", "w") as f:
        for r in per_row:
            f.write(json.dumps(r) + "\n")
    (out_dir / "metrics.md").write_text(markdown_table(metrics))
    return metrics


LABELS = {
    "spoken_answer_accuracy": "spoken-answer accuracy (judge)",
    "thinking_exact_match": "thinking exact match",
    "s2s_text_accuracy": "S2S text answer accuracy",
    "s2t_accuracy": "S2T accuracy",
    "asr_wer": "question ASR WER",
    "tts_intelligibility": "TTS intelligibility (judge, 21 answers)",
    "resynthesis_ceiling": "resynthesis ceiling (tokenizer -> vocoder -> judge)",
    "ground_truth_ceiling": "ground-truth ceiling (judge on espeak audio)",
    "forward_passes_per_token": "forward passes per generated token (S2S)",
    "speed_vote_agreement": "speed-vote agreement (share of copies agreeing, S2S)",
    "unseen_speaker_spoken_accuracy": "spoken-answer accuracy, voices never heard in training (held-out variants)",
    "unseen_speaker_thinking_exact": "thinking exact match, voices never heard in training",
    "worst_variant": "worst voice variant (S2S, >= 5 rows)",
    "worst_variant_spoken_accuracy": "its spoken-answer accuracy",
}


def markdown_table(metrics: dict[str, Any]) -> str:
    lines = ["| metric | value |", "|---|---|"]
    for key, label in LABELS.items():
        if key in metrics:
            v = metrics[key]
            lines.append(f"| {label} | {v:.3f} |" if isinstance(v, float) else f"| {label} | {v} |")
    lines.append(f"| rows | {metrics['rows']} |")
    return "\n".join(lines) + "\n"
