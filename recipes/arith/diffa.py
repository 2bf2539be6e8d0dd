"""``diffuspeech recipe arith diffa``: DIFFA on the spoken-arithmetic corpus, on a CPU.

1. a word-level text tokenizer over the corpus words (``train.build_text_tokenizer``);
2. a DIFFA manifest: each corpus row with its question audio (a wav path), its text fields,
   ``rate`` ("fast": espeak speed >= 170 words/min, "slow": <= 150, none in between), and
   ``question_disfluent``: the question with 0..MAX_FILLERS filler words ("um", "uh", ...) at random
   places. A pretrained LLM reads prompts of any length and wording; a tiny LM trained on 187
   five-word questions does not, so the text LM learns from disfluent prompts too (answer them,
   and repeat the clean question): an adapter then has to turn each stretch of speech into a word
   or a filler, not to squeeze a question into five exact positions;
3. one ``diffuspeech.training`` run of ``diffa.yaml``: stage ``lm`` trains the text diffusion LM
   on text only (T2T, repeat, label), then stages ``align`` (ASR, the semantic adapter) and
   ``qa`` (S2T + speech rate + ASR, both adapters) train only the adapters: the LM and the
   encoder stay bit-identical (the report checks it);
4. the ablation (unless ``--no-ablation``): stage ``qa`` again without the acoustic adapter, from
   the same frozen LM and aligned semantic adapter (``train.init_from`` the ``align`` stage's model:
   the acoustic adapter's weights there are ignored), so the two differ in stage 2 only;
5. both evaluated on the dev split and on the unseen-voice split: S2T accuracy, thinking exact
   match, speech-rate accuracy, question ASR WER.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from tqdm import tqdm

from diffuspeech.compose import apply_overrides

from .corpus import read_manifest
from .train import build_text_tokenizer, scale_stages

TEMPLATE = Path(__file__).with_name("diffa.yaml")
FAST, SLOW = 170, 150  # espeak words/min: at or above FAST is "fast", at or below SLOW "slow"
FILLERS = ("um", "uh", "er", "ah", "hmm", "well", "so", "like")  # disfluencies of the text LM's prompts
MAX_FILLERS = 24  # up to this many per prompt: about the adapters' 12.5 embeddings per second of speech


def disfluent(text: str, rng) -> str:
    """``text`` with ``rng.randint(0, MAX_FILLERS)`` filler words inserted at random places."""
    words = text.split()
    for _ in range(rng.randint(0, MAX_FILLERS)):
        words.insert(rng.randint(0, len(words)), rng.choice(FILLERS))
    return " ".join(words)


@dataclass
class ArithDiffaConfig:
    data: str = "arith-corpus"  # folder written by `recipe arith prepare`
    out: str = "runs/arith-diffa"  # run folder
    seed: int = 0
    scale: float = 1.0  # multiplies every stage's steps (0.01 for a smoke run)
    ablation: bool = True  # also train the semantic-only adapters on the same frozen LM
    eval_limit: Optional[int] = None  # first N rows of each dev split (None = all)
    overrides: list[str] = field(default_factory=list)  # dotlist overrides of diffa.yaml
    install: bool = False  # copy the model into the package as the embedded `arith-diffa`
    progress: bool = True


def rate_word(speed: Any) -> Optional[str]:
    if not isinstance(speed, (int, float)):
        return None
    return "fast" if speed >= FAST else "slow" if speed <= SLOW else None


def diffa_manifest(rows: list[dict], data_dir: Path, path: Path, seed: int = 0) -> Path:
    """Corpus rows -> DIFFA rows (no task list: a row serves every task whose fields it has)."""
    import random

    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            row = {
                "id": r["id"], "split": r["split"], "question_text": r["question_text"], "thinking": r["thinking"],
                "answer_text": r["answer_text"], "question_audio": str((data_dir / r["question_audio"]).resolve()),
                "question_disfluent": disfluent(r["question_text"], rng),
            }
            if rate_word(r.get("speed")):
                row["rate"] = rate_word(r.get("speed"))
            f.write(json.dumps(row) + "\n")
    return path


def evaluate_model(model_dir: Path, rows: list[dict], data_dir: Path, batch_size: int = 64, progress: bool = True) -> dict[str, Any]:
    """S2T accuracy, thinking exact match, speech-rate accuracy (rows with a rate) and ASR WER."""
    import jiwer

    from diffuspeech.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(model_dir)
    audio = [str(data_dir / r["question_audio"]) for r in rows]
    s2t = think = 0
    hyps, refs = [], []
    rated = [(i, rate_word(r.get("speed"))) for i, r in enumerate(rows) if rate_word(r.get("speed"))]
    rate_ok = 0
    bar = tqdm(total=2 * len(rows) + len(rated), desc=f"eval {model_dir}", unit="q", disable=not progress)
    for start in range(0, len(rows), batch_size):
        chunk = list(range(start, min(len(rows), start + batch_size)))
        for i, o in zip(chunk, pipe.run_batch("s2t", [{"question_audio": audio[i]} for i in chunk])):
            s2t += o.fields["answer_text"] == rows[i]["answer_text"]
            think += o.fields["thinking"] == rows[i]["thinking"]
        for i, o in zip(chunk, pipe.run_batch("asr", [{"question_audio": audio[i]} for i in chunk])):
            hyps.append(o.fields["question_text"].strip() or "<empty>")
            refs.append(rows[i]["question_text"])
        bar.update(2 * len(chunk))
    for start in range(0, len(rated), batch_size):
        chunk = rated[start : start + batch_size]
        for (_, want), o in zip(chunk, pipe.run_batch("rate", [{"question_audio": audio[i]} for i, _ in chunk])):
            rate_ok += o.fields["rate"] == want
        bar.update(len(chunk))
    bar.close()
    n = len(rows)
    return {
        "rows": n, "s2t_accuracy": s2t / n, "thinking_exact_match": think / n, "asr_wer": jiwer.wer(refs, hyps),
        "rate_rows": len(rated), "rate_accuracy": rate_ok / max(1, len(rated)),
    }


def half_weights(path: Path) -> None:
    """Rewrite a model's float32 weights as float16 (the package budget is 5 MB per model; they load
    back into the float32 modules), atomically."""
    from diffuspeech.atomic import save_tensors

    state = {k: (v.half() if v.dtype == torch.float32 else v) for k, v in load_file(str(path)).items()}
    save_tensors(state, path, metadata={"format": "diffuspeech-model/1"})


def frozen_identical(before: Path, after: Path) -> bool:
    """Whether every backbone and encoder tensor of ``after`` equals ``before``'s bit for bit."""
    a, b = load_file(str(before)), load_file(str(after))
    keys = [k for k in a if k.startswith(("backbone.", "encoder."))]
    return bool(keys) and all(k in b and torch.equal(a[k], b[k]) for k in keys)


def run(cfg: ArithDiffaConfig) -> dict[str, Any]:
    from diffuspeech.model import SpeechDiffusionModel
    from diffuspeech.training.trainer import train
    from diffuspeech.vocab import Vocab, VocabConfig

    t0 = time.perf_counter()
    data_dir, out = Path(cfg.data), Path(cfg.out)
    for name in ("train.jsonl", "dev.jsonl"):
        if not (data_dir / name).is_file():
            raise FileNotFoundError(f"{data_dir / name} not found: run `diffuspeech recipe arith prepare --out {data_dir}` first")
    train_rows, dev_rows = read_manifest(data_dir / "train.jsonl"), read_manifest(data_dir / "dev.jsonl")
    art = out / "artefacts"
    tok_path = build_text_tokenizer(train_rows, art / "tokenizer.json", extra_words=("fast", "slow", *FILLERS))
    manifest = diffa_manifest(train_rows + dev_rows, data_dir, art / "manifest.jsonl", cfg.seed)
    base = OmegaConf.load(TEMPLATE)
    fills = OmegaConf.create({"vocab": {"text_tokenizer": str(tok_path.resolve())}, "data": {"manifest": str(manifest.resolve())},
                              "train": {"seed": cfg.seed}})
    config = apply_overrides(OmegaConf.merge(base, fills), cfg.overrides)
    vocab = Vocab(OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(VocabConfig), config.vocab)))
    if OmegaConf.is_missing(config.backbone, "vocab_size"):
        config.backbone.vocab_size = vocab.size
    config.train.progress = cfg.progress
    scale_stages(config, cfg.scale)
    report: dict[str, Any] = {"data": str(data_dir), "train_rows": len(train_rows), "dev_rows": len(dev_rows)}

    runs = {"semantic + acoustic": train(config, out=out / "train")}
    lm_stage = out / "train" / "stages" / "lm" / "model"
    if cfg.ablation and config.get("adapters", {}).get("acoustic") is not None:
        ablated = config.copy()
        ablated.adapters.acoustic = None
        ablated.train.init_from = str((out / "train" / "stages" / "align" / "model").resolve())
        ablated.train.stages = [s for s in config.train.stages if s.name == "qa"]
        runs["semantic only"] = train(ablated, out=out / "train-semantic")
    report["minutes_training"] = round((time.perf_counter() - t0) / 60, 1)
    splits = {"dev": dev_rows}
    if (data_dir / "dev_unseen.jsonl").is_file():
        splits["dev (unseen voices)"] = read_manifest(data_dir / "dev_unseen.jsonl")
    results: dict[str, Any] = {}
    for name, result in runs.items():
        results[name] = {
            "frozen_lm_and_encoder_bit_identical": frozen_identical(lm_stage / "model.safetensors", result.model_dir / "model.safetensors"),
            **{split: evaluate_model(result.model_dir, rows[: cfg.eval_limit], data_dir, progress=cfg.progress) for split, rows in splits.items()},
        }
    report["results"] = results
    model_dir = out / "model"
    model = SpeechDiffusionModel.load(runs["semantic + acoustic"].model_dir)
    model.save(model_dir, extra={"recipe": "arith-diffa", "recipe_report": report})
    report["model"] = str(model_dir)
    report["minutes"] = round((time.perf_counter() - t0) / 60, 1)
    if cfg.install:
        import shutil

        from .models import DIFFA_MODEL_DIR

        if DIFFA_MODEL_DIR.exists():
            shutil.rmtree(DIFFA_MODEL_DIR)
        shutil.copytree(model_dir, DIFFA_MODEL_DIR)
        half_weights(DIFFA_MODEL_DIR / "model.safetensors")
        report["installed"] = str(DIFFA_MODEL_DIR)
        report["installed_results"] = {split: evaluate_model(DIFFA_MODEL_DIR, rows[: cfg.eval_limit], data_dir, progress=cfg.progress)
                                       for split, rows in splits.items()}
    (out / "recipe_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(results_table(results))
    return report


def results_table(results: dict[str, Any]) -> str:
    """One markdown row per (adapters, split)."""
    lines = ["| adapters | split | S2T accuracy | thinking exact | speech-rate accuracy | ASR WER | LM + encoder bit-identical |",
             "|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        for split, m in res.items():
            if isinstance(m, dict):
                lines.append(f"| {name} | {split} ({m['rows']} rows) | {m['s2t_accuracy']:.3f} | {m['thinking_exact_match']:.3f} | "
                             f"{m['rate_accuracy']:.3f} ({m['rate_rows']}) | {m['asr_wer']:.3f} | {res['frozen_lm_and_encoder_bit_identical']} |")
    return "\n".join(lines) + "\n"
