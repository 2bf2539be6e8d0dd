"""The ``train:`` section: stages, optimiser, precision, logging and checkpoint settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from ..compose import CROSS_CHECKS, SECTION_SCHEMAS, ConfigError, checked_section, validate_settings

__all__ = ["PRECISIONS", "StageConfig", "TrainConfig", "check_train_config", "section", "validate_train_section"]

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class StageConfig:
    name: str = "main"  # the stage's model is saved to <out>/stages/<name>/model
    steps: int = 100  # optimizer steps
    lr: float = 1e-4  # peak learning rate
    warmup_steps: int = 0  # linear warmup, then cosine decay
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    mixture: Any = None  # {task: weight}; None = every task with examples, equally
    train: list[str] = field(default_factory=lambda: ["backbone"])  # parameter-name prefixes to train ("backbone", "backbone.transformer.wte")
    freeze: list[str] = field(default_factory=list)  # prefixes kept frozen inside `train`


@dataclass
class TrainConfig:
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])  # run in order; each starts from the previous one's weights
    seed: int = 0  # model init, batch order and noise
    out: Optional[str] = None  # run folder; None = runs/<config file name>; `--out` wins
    init_from: Optional[str] = None  # a saved model folder whose weights start the first stage
    grad_accum: int = 1  # micro-steps per optimizer step (data.batch_size is split over processes x grad_accum)
    max_grad_norm: Optional[float] = 1.0  # gradient clipping; None = off
    weight_decay: float = 0.1  # AdamW, on matrices only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    adam_eps: float = 1e-8
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 on CPU) | "fp32" | "bf16"
    device: str = "auto"  # "auto" | "cpu" | "cuda" (under torchrun: cuda:<LOCAL_RANK>)
    strategy: str = "auto"  # "auto" (ddp with several processes) | "none" | "ddp" | "fsdp" (FSDP2 fully_shard)
    gradient_checkpointing: bool = False  # sets the backbone's own `gradient_checkpointing` setting
    log_every: int = 10  # steps between log.jsonl / TensorBoard scalars
    eval_every: int = 0  # steps between dev evaluations; 0 = only at the end of each stage
    eval_times: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])  # dev loss at these fixed t
    checkpoint_every: int = 100  # steps between checkpoints (also at the end of every stage)
    keep_checkpoints: int = 2  # newest checkpoints kept
    tensorboard: bool = True
    progress: bool = True  # tqdm progress bar (rank 0)


def check_train_against_tasks(cfg: Any, base_dir: Any = None) -> None:
    """Stage mixtures name known tasks; the batch splits evenly over gradient-accumulation steps."""
    from ..formats import parse_tasks

    node = cfg.get("train") if hasattr(cfg, "get") else None
    if node is None:
        return
    tc = validate_train_section(node)
    tasks = parse_tasks(cfg.get("tasks"))
    for i, s in enumerate(tc.stages):
        unknown = sorted(set(s.mixture or {}) - set(tasks))
        if unknown:
            raise ConfigError(f"train.stages.{i}.mixture: unknown task(s) {unknown}; the config's tasks: {', '.join(tasks)}")
    data = cfg.get("data") or {}
    batch = data.get("batch_size", 8) if hasattr(data, "get") else 8
    if isinstance(batch, int) and batch > 0 and batch % tc.grad_accum:
        raise ConfigError(f"data.batch_size: {batch} does not split into train.grad_accum={tc.grad_accum} equal micro-batches; "
                          f"use a multiple of {tc.grad_accum}")


CROSS_CHECKS.append(check_train_against_tasks)


def section(schema: type, cfg: DictConfig, key: str) -> Any:
    node = cfg.get(key) or {}
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    return validate_settings(schema, data, key, f"section {key!r}")


def check_train_config(tc: TrainConfig) -> None:
    if not tc.stages:
        raise ConfigError("train.stages: give at least one stage")
    names = [s.name for s in tc.stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"train.stages: stage names must be unique, got {names}")
    for i, s in enumerate(tc.stages):
        if s.mixture is not None and not (isinstance(s.mixture, dict) and all(isinstance(w, (int, float)) for w in s.mixture.values())):
            raise ConfigError(f"train.stages[{i}].mixture: expected {{task: weight}}, got {s.mixture!r}")
        for key, ok, want in (("steps", s.steps > 0, "> 0"), ("lr", s.lr > 0, "> 0"), ("warmup_steps", s.warmup_steps >= 0, ">= 0"),
                              ("min_lr_ratio", 0 <= s.min_lr_ratio <= 1, "in [0, 1]")):
            if not ok:
                raise ConfigError(f"train.stages.{i}.{key} (stage {s.name!r}): expected {want}, got {getattr(s, key)}")
        if isinstance(s.mixture, dict):
            if any(w < 0 for w in s.mixture.values()) or not sum(s.mixture.values()) > 0:
                raise ConfigError(f"train.stages.{i}.mixture: weights must be >= 0 and sum to more than 0, got {s.mixture}")
    if tc.precision not in PRECISIONS:
        raise ConfigError(f"train.precision: {tc.precision!r}; valid: {', '.join(PRECISIONS)}")
    if tc.grad_accum <= 0:
        raise ConfigError(f"train.grad_accum: expected a positive integer, got {tc.grad_accum}")
    if len(tc.betas) != 2:
        raise ConfigError(f"train.betas: expected two numbers, got {list(tc.betas)}")
    if not tc.eval_times or not all(0 < t <= 1 for t in tc.eval_times):
        raise ConfigError(f"train.eval_times: expected values in (0, 1], got {list(tc.eval_times)}")
    if tc.log_every <= 0 or tc.checkpoint_every <= 0 or tc.eval_every < 0:
        raise ConfigError("train.log_every and train.checkpoint_every must be positive, train.eval_every >= 0")
    if tc.keep_checkpoints < 1:
        raise ConfigError(f"train.keep_checkpoints: expected at least 1 (the newest is needed to resume), got {tc.keep_checkpoints}")
    if tc.max_grad_norm is not None and not tc.max_grad_norm > 0:
        raise ConfigError(f"train.max_grad_norm: expected a value > 0 (or null: no clipping), got {tc.max_grad_norm}")
    if tc.weight_decay < 0:
        raise ConfigError(f"train.weight_decay: expected a value >= 0, got {tc.weight_decay}")
    if str(tc.device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"train.device: {tc.device!r} but no CUDA GPU is available here; use train.device=auto or cpu")
    elif tc.device not in ("auto", "cpu"):
        raise ConfigError(f"train.device: {tc.device!r}; valid: auto, cpu, cuda, cuda:N")


validate_train_section = checked_section(TrainConfig, check_train_config, "train")
SECTION_SCHEMAS["train"] = validate_train_section


