"""``diffuspeech recipe arith train``: the embedded default model, end to end on a CPU.

Stages (each through the framework's own plugins and commands):

1. text tokenizer: a word-level ``tokenizers`` model over the corpus words;
2. speech units: log-mel k-means (``mel_kmeans``) fitted on question audio of the training
   voices, plus every log-mel frame of the 21 assistant-voice answers as units of their own.
   Questions are read onto the k-means units only (``tokenizer.assign_units``); the answer
   frames are output-only units: the answers' units are written inline into the manifest;
   The spoken channel's ceiling is set by tokenizer + vocoder (DESIGN section 7): units that
   keep the assistant's frames exactly let the ``griffinlim`` vocoder resynthesise the answers
   near the ground-truth ceiling, which step 3 measures; each training question is also added
   at the ``speed_perturb`` rates (by default played 0.9x and 1.1x as fast: new speaker-like
   variants), its units inline, so unseen voices are heard better;
3. the resynthesis ceiling: assistant-voice answer -> tokenizer -> vocoder -> judge;
4. the backbone: ``diffuspeech.training.trainer`` stage 1 (ASR, TTS, LM) then stage 2 (S2S with
   thinking, S2T, T2T, ASR, TTS), from ``arith.yaml`` beside this file (TtT-style by default:
   text targets autoregressive, the spoken answer by masked diffusion);
5. the model folder (safetensors + config + provenance + assets), optionally installed as the
   package's embedded default.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from diffuspeech.audio import load_audio, speed_perturb
from diffuspeech.compose import apply_overrides, build_component
from diffuspeech.kmeans import fit_kmeans
from diffuspeech.mel import MelConfig, log_mel, mel_transform

from .corpus import read_manifest
from .number_words import NUMBER_WORDS

TEMPLATE = Path(__file__).with_name("arith.yaml")
TASKS = ("s2s", "s2t", "t2t", "asr", "tts", "lm")


@dataclass
class ArithTrainConfig:
    data: str = "arith-corpus"  # folder written by `recipe arith prepare` (train.jsonl, dev.jsonl, audio/)
    out: str = "runs/arith"  # run folder
    question_units: int = 256  # k-means units fitted on question audio
    # extra copies of each training question played this many times faster (Kaldi-style: tempo and
    # formants move together); [] = none (the arith-mdm model)
    speed_perturb: list[float] = field(default_factory=lambda: [0.9, 1.1])
    max_fit_frames: int = 60_000  # frames sampled for k-means
    seed: int = 0
    scale: float = 1.0  # multiplies every stage's steps (0.01 for a smoke run)
    overrides: list[str] = field(default_factory=list)  # dotlist overrides of arith.yaml (ablations)
    install: bool = False  # copy the final model into the package as the embedded default
    resume: bool = False  # continue an interrupted backbone training run


def scale_stages(config: Any, scale: float) -> None:
    """Multiply every training stage's steps by ``scale`` (``--scale``; warmup and checkpoint spacing follow)."""
    if scale == 1.0:
        return
    for stage in config.train.stages:
        stage.steps = max(1, int(round(stage.steps * scale)))
        stage.warmup_steps = min(stage.warmup_steps, max(0, stage.steps // 5))
    config.train.checkpoint_every = max(1, min(int(config.train.checkpoint_every), *[s.steps for s in config.train.stages]))


def build_text_tokenizer(rows: list[dict], path: Path, extra_words: tuple[str, ...] = ()) -> Path:
    """Word-level tokenizer over every word of the corpus text (plus the numbers 0..20 and ``extra_words``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words: set[str] = set(NUMBER_WORDS) | {str(n) for n in range(len(NUMBER_WORDS))} | {"+", "-", "="} | set(extra_words)
    for r in rows:
        for key in ("question_text", "thinking", "answer_text", "answer_words"):
            words.update(str(r.get(key, "")).split())
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(sorted(words))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def fit_units(rows: list[dict], data_dir: Path, out: Path, question_units: int, max_frames: int, seed: int) -> tuple[Path, dict]:
    """Centroids = k-means over question frames ++ every assistant-answer frame."""
    from diffuspeech.quantizers import save_centroids

    mel = MelConfig()
    transform = mel_transform(mel)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(rows), generator=gen).tolist()
    frames, total = [], 0
    for i in tqdm(order, desc="question features", unit="utt"):
        if total >= max_frames:
            break
        f = log_mel(load_audio(data_dir / rows[i]["question_audio"], mel.sample_rate), mel, transform)  # [T, n_mels]
        frames.append(f)
        total += f.shape[0]
    q = torch.cat(frames)[:max_frames]  # [N, n_mels]
    fit = fit_kmeans(q, question_units, seed=seed, progress="k-means")
    answers = sorted({r["answer_audio"] for r in rows})
    a = torch.cat([log_mel(load_audio(data_dir / p, mel.sample_rate), mel, transform) for p in answers])  # [M, n_mels]
    centroids = torch.cat([fit.centroids, a])  # [K, n_mels]
    path = save_centroids(
        out, centroids, "mel_kmeans",
        {"mel_config": mel.to_json(), "question_units": str(question_units), "answer_frames": str(a.shape[0])},
    )
    return path, {"question_frames": int(q.shape[0]), "question_units": question_units, "answer_units": int(a.shape[0]), "num_units": int(centroids.shape[0])}


def resynthesis_ceiling(model_cfg: dict, rows: list[dict], data_dir: Path) -> dict[str, Any]:
    """Assistant-voice answers -> tokenizer -> vocoder -> judge, and the ground truth -> judge."""
    from .judge import get_judge

    tok = output_tokenizer(model_cfg["tokenizer"])
    voc = build_component("vocoders", model_cfg["vocoder"], "vocoder")
    judge = get_judge()
    answers = sorted({(r["answer_audio"], r["answer_words"]) for r in rows})
    gt = resyn = 0
    misses = []
    for path, words in answers:
        wav = load_audio(data_dir / path, tok.sample_rate)
        gt += judge(wav, tok.sample_rate) == words
        heard = judge(voc.decode_one(tok.encode_one(wav)), voc.sample_rate)
        resyn += heard == words
        if heard != words:
            misses.append({"answer": words, "heard": heard})
    n = len(answers)
    return {"answers": n, "ground_truth_ceiling": gt / n, "resynthesis_ceiling": resyn / n, "resynthesis_misses": misses}


def output_tokenizer(tokenizer_cfg: dict):
    """The recipe's tokenizer with ``assign_units`` lifted: it reads the assistant's answers onto
    their own exact-frame units (the targets the model learns to speak and the vocoder renders),
    while the model's tokenizer reads questions onto the k-means units only."""

    return build_component("tokenizers", tokenizer_cfg, "tokenizer").with_all_units()


def perturbed_question_units(rows: list[dict], data_dir: Path, tokenizer, rates: list[float], progress: bool = True) -> dict[tuple[str, float], list[int]]:
    """(row id, rate) -> the question's units after :func:`~diffuspeech.audio.speed_perturb`, read by the model's own tokenizer."""
    out: dict[tuple[str, float], list[int]] = {}
    for r in tqdm(rows, desc="speed perturbation", unit="question", disable=not progress or not rates):
        wav = load_audio(data_dir / r["question_audio"], tokenizer.sample_rate)  # [T]
        for rate in rates:
            out[(r["id"], rate)] = tokenizer.encode_one(speed_perturb(wav, tokenizer.sample_rate, rate)).tolist()
    return out


def training_manifest(
    rows: list[dict],
    data_dir: Path,
    path: Path,
    answer_units: dict[str, list[int]],
    perturbed: dict[tuple[str, float], list[int]] | None = None,
) -> Path:
    """The corpus rows as trainer rows: questions point at their audio files (encoded by the
    model's tokenizer at load time); answers carry their units inline (``answer_units``: audio
    path -> units from :func:`output_tokenizer`). ``perturbed`` adds one more row per
    (row id, rate) with the speed-perturbed question's units inline (id ``<id>@<rate>``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    extra: dict[str, list[tuple[float, list[int]]]] = {}
    for (row_id, rate), units in (perturbed or {}).items():
        extra.setdefault(row_id, []).append((rate, units))
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            row = {
                "id": r["id"],
                "split": r["split"],
                "tasks": list(TASKS),
                "question_text": r["question_text"],
                "thinking": r["thinking"],
                "answer_text": r["answer_text"],
                "answer_words": r["answer_words"],
                "question_speech": {"audio": str((data_dir / r["question_audio"]).resolve())},
                "answer_speech": {"units": answer_units[r["answer_audio"]]},
            }
            f.write(json.dumps(row) + "\n")
            for rate, units in extra.get(r["id"], []):
                f.write(json.dumps({**row, "id": f"{r['id']}@{rate:g}", "question_speech": {"units": units}}) + "\n")
    return path


def run(cfg: ArithTrainConfig) -> dict[str, Any]:
    from diffuspeech.model import SpeechDiffusionModel
    from diffuspeech.training.trainer import train

    t0 = time.perf_counter()
    data_dir, out = Path(cfg.data), Path(cfg.out)
    for name in ("train.jsonl", "dev.jsonl"):
        if not (data_dir / name).is_file():
            raise FileNotFoundError(f"{data_dir / name} not found: run `diffuspeech recipe arith prepare --out {data_dir}` first")
    train_rows = read_manifest(data_dir / "train.jsonl")
    dev_rows = read_manifest(data_dir / "dev.jsonl")
    out.mkdir(parents=True, exist_ok=True)
    art = out / "artefacts"
    report: dict[str, Any] = {"data": str(data_dir), "train_rows": len(train_rows), "dev_rows": len(dev_rows)}

    tok_path = art / "tokenizer.json"
    units_path = art / "units.safetensors"
    if not (cfg.resume and tok_path.is_file() and units_path.is_file()):
        build_text_tokenizer(train_rows, tok_path)
        units_path, report["units"] = fit_units(train_rows, data_dir, units_path, cfg.question_units, cfg.max_fit_frames, cfg.seed)
    from diffuspeech.quantizers import load_centroids

    centroids, units_meta, _ = load_centroids(units_path)
    num_units, question_units = int(centroids.shape[0]), int(units_meta["question_units"])
    manifest = art / "manifest.jsonl"

    base = OmegaConf.load(TEMPLATE)
    fills = OmegaConf.create(
        {
            "vocab": {"text_tokenizer": str(tok_path.resolve()), "num_units": num_units},
            "tokenizer": {"path": str(units_path.resolve()), "assign_units": question_units},
            "vocoder": {"path": str(units_path.resolve())},
            "data": {"manifest": str(manifest.resolve())},
            "train": {"seed": cfg.seed},
        }
    )
    config = apply_overrides(OmegaConf.merge(base, fills), cfg.overrides)
    questions = build_component("tokenizers", OmegaConf.to_container(config.tokenizer, resolve=True), "tokenizer")
    answers = questions.with_all_units()  # = output_tokenizer(config.tokenizer), without building it twice
    answer_units = {
        p: answers.encode_one(load_audio(data_dir / p, answers.sample_rate)).tolist()
        for p in sorted({r["answer_audio"] for r in train_rows + dev_rows})
    }
    perturbed = None
    if cfg.speed_perturb:
        perturbed = perturbed_question_units(train_rows, data_dir, questions, list(cfg.speed_perturb))  # train split only: dev stays as spoken
        limits = [seg.max_len for t in config.tasks.values() for seg in t.segments if seg.field == "question_speech" and seg.get("max_len")]
        too_long = sum(len(u) > min(limits) for u in perturbed.values()) if limits else 0
        report["speed_perturb"] = {"rates": list(cfg.speed_perturb), "extra_rows": len(perturbed), "over_max_len": too_long}  # skipped at load
    training_manifest(train_rows + dev_rows, data_dir, manifest, answer_units, perturbed)
    from diffuspeech.vocab import Vocab, VocabConfig

    vocab = Vocab(OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(VocabConfig), config.vocab)))
    if OmegaConf.is_missing(config.backbone, "vocab_size"):
        config.backbone.vocab_size = vocab.size
    scale_stages(config, cfg.scale)
    report["ceiling"] = resynthesis_ceiling(OmegaConf.to_container(config, resolve=True), train_rows, data_dir)
    print(
        f"spoken-channel ceiling on the {report['ceiling']['answers']} assistant answers: "
        f"ground truth {report['ceiling']['ground_truth_ceiling']:.0%}, resynthesised {report['ceiling']['resynthesis_ceiling']:.0%}",
        flush=True,
    )
    result = train(config, out=out / "train", resume=cfg.resume)
    report["final_train_loss"] = result.losses[max(result.losses)] if result.losses else None
    report["dev"] = result.dev[-1] if result.dev else None
    model_dir = out / "model"
    model = SpeechDiffusionModel.load(result.model_dir)
    model.save(model_dir, extra={"recipe": "arith", "recipe_report": {k: v for k, v in report.items() if k != "dev"}})
    report["model"] = str(model_dir)
    report["minutes"] = round((time.perf_counter() - t0) / 60, 1)
    if cfg.install:
        from .models import DEFAULT_MODEL_DIR

        if DEFAULT_MODEL_DIR.exists():
            shutil.rmtree(DEFAULT_MODEL_DIR)
        shutil.copytree(model_dir, DEFAULT_MODEL_DIR)
        report["installed"] = str(DEFAULT_MODEL_DIR)
    (out / "recipe_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
