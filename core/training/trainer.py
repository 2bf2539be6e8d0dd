"""The trainer: stages of masked-diffusion training, single process or under torchrun.

    diffuspeech train configs/train_tiny.yaml data.manifest=data/train.jsonl --out runs/tiny
    torchrun --nproc_per_node 4 -m diffuspeech.cli train my.yaml train.strategy=fsdp --resume

A run folder holds ``config.yaml`` (the resolved config), ``log.jsonl`` (scalars),
``tensorboard/``, ``checkpoints/`` (see ``diffuspeech.training.checkpoint``), one saved model per
stage (``stages/<name>/model``) and the final model (``model``), each loadable with
``SpeechDiffusionModel.load``.

Determinism: the model is initialised under ``train.seed``; batches come from a seeded
``MixtureBatcher``; the noise (t and the mask draw) of each chunk of each global batch comes
from a generator seeded by (seed, stage, step, chunk). Nothing draws from global RNGs, so a
resumed run repeats an uninterrupted one exactly, and the loss does not depend on how a
global batch is split over processes and accumulation steps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file
from torch import nn

from ..atomic import write_text_atomic
from ..compose import ConfigError, build_component, validate_config
from ..formats import collate
from ..objective import Objective, ObjectiveContext
from ..speech_features import SpeechFeatures
from .batching import MixtureBatcher, generator, normalise_mixture, shard
from .checkpoint import (
    CheckpointError,
    TrainState,
    clean_partial,
    latest_checkpoint,
    load_latest_valid,
    restore_rng,
    save_checkpoint,
    write_json_atomic,  # noqa: F401 - re-exported (public in __all__)
)
from .config import StageConfig, TrainConfig, check_train_config, section
from .data import DataConfig, DataError, ExampleSet, FeatureAudio, check_data_config, load_examples, speech_resolver
from .distributed import all_reduce_sum, barrier, init_distributed, resolve_strategy, shard_fsdp, shutdown, wrap_ddp
from .lock import RunLock
from .module import TrainModule, build_optimizer, lr_at, select_trainable

log = logging.getLogger("diffuspeech.train")

MODEL_ONLY_DROP = ("train", "data")  # sections that are not part of a saved model


def read_log(path: Path) -> tuple[list[dict[str, Any]], int]:
    """``log.jsonl`` records, tolerant of a half-written last line; returns ``(records, unreadable lines)``."""
    records, broken = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            broken += 1
            continue
        if isinstance(rec, dict):
            records.append(rec)
        else:
            broken += 1
    return records, broken


@dataclass
class TrainResult:
    out: Path
    model_dir: Path
    losses: dict[int, float] = field(default_factory=dict)  # global step -> train loss (steps run by this call)
    dev: list[dict[str, float]] = field(default_factory=list)  # dev evaluations run by this call


class Trainer:
    def __init__(
        self,
        config: DictConfig | dict,
        base_dir: str | Path | None = None,  # folder relative paths in the config are read against
        out: str | Path | None = None,
        resume: bool = False,
        name: str = "run",  # default run-folder name
    ) -> None:
        cfg = config if isinstance(config, DictConfig) else OmegaConf.create(config)
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ConfigError(
                "mandatory settings are not set (??? in the config): " + ", ".join(missing)
                + "; give them as overrides, e.g. " + " ".join(f"{k}=..." for k in missing)
            )
        validate_config(cfg, base_dir=base_dir)
        self.config, self.base_dir, self.resume = cfg, Path(base_dir) if base_dir else None, resume
        self.tc: TrainConfig = section(TrainConfig, cfg, "train")
        self.dc: DataConfig = section(DataConfig, cfg, "data")
        check_train_config(self.tc)
        check_data_config(self.dc)
        if not self.dc.manifest:
            raise ConfigError("data.manifest is not set: give the JSONL training manifest (data.manifest=path/to/train.jsonl)")
        self.out = Path(out or self.tc.out or Path("runs") / name)
        self.model_cfg = OmegaConf.create({k: v for k, v in cfg.items() if k not in MODEL_ONLY_DROP})

    # ------------------------------------------------------------------ helpers
    def _path(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() or self.base_dir is None else self.base_dir / p

    @property
    def use_bf16(self) -> bool:
        return self.tc.precision == "bf16" or (self.tc.precision == "auto" and self.info.device.type == "cuda")

    def _autocast(self):
        if not self.use_bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.info.device.type, dtype=torch.bfloat16)

    def _main_log(self, msg: str) -> None:
        if self.info.is_main:
            log.info(msg)

    # ------------------------------------------------------------------ setup
    def _build_model(self):
        from ..model import SpeechDiffusionModel

        torch.manual_seed(self.tc.seed)
        model = SpeechDiffusionModel(self.model_cfg, base_dir=self.base_dir)
        if self.tc.init_from:
            src = self._path(self.tc.init_from) / "model.safetensors"
            if not src.is_file():
                raise ConfigError(f"train.init_from: no saved model at {src.parent} (expected model.safetensors)")
            left_out = model.load_state_dict(load_file(str(src)), partial=True)
            if left_out:
                self._main_log(f"train.init_from: {src.parent}: {', '.join(left_out)} (fresh: no saved weights, they start from "
                               "their initialisation; ignored: saved weights of components this config does not have)")
        backbone = model.backbone
        if backbone is None:
            raise ConfigError("training needs a `backbone` section")
        if backbone.vocab_size < model.vocab.size:
            raise ConfigError(
                f"backbone: {backbone.vocab_size} embedding rows but the vocabulary has {model.vocab.size} ids; "
                f"set backbone.vocab_size (fresh models) or backbone.extend_vocab_to to {model.vocab.size}"
            )
        if self.tc.gradient_checkpointing:
            if not hasattr(backbone.config, "gradient_checkpointing"):
                raise ConfigError(
                    f"train.gradient_checkpointing: backbone {type(backbone).__name__} has no `gradient_checkpointing` setting"
                )
            backbone.config.gradient_checkpointing = True
        if model.scheduler is None:
            raise ConfigError("training needs a `scheduler` section (e.g. scheduler: linear)")
        noiser = model.noiser or build_component("noisers", "iid", "noiser")
        attention = model.attention or build_component("attention", "bidirectional", "attention")
        for module in model.modules().values():
            module.to(self.info.device)
        node = model.config.get("attention")
        policy_name = "bidirectional (default)" if node is None else str(node if isinstance(node, str) else node.get("name"))
        objective: Objective = model.objective or build_component("objectives", "diffusion", "objective")
        objective.prepare(ObjectiveContext(model.scheduler, noiser, model.vocab.mask_id, attention, policy_name))
        self.objective = objective
        return model, TrainModule(model.modules(), objective, attention)

    def _load_data(self, model) -> tuple[ExampleSet, ExampleSet | None]:
        max_length = self.dc.max_length or model.backbone.max_seq_len
        used: set[str] = set()
        for s in self.tc.stages:
            used |= set(s.mixture) if s.mixture else set(model.tasks)
        manifest = self._path(self.dc.manifest)
        speech = speech_resolver(self.dc, self.base_dir, manifest, model.tokenizer, model.vocab.num_units)
        frontend = SpeechFeatures.of(model)
        common = dict(
            tasks=model.tasks, vocab=model.vocab, speech=speech, config=self.dc, max_length=max_length, only_tasks=used,
            progress=self.info.is_main and self.tc.progress,
            features=FeatureAudio(frontend, speech.audio_root) if frontend is not None else None,
        )
        train = load_examples(manifest, split=self.dc.train_split, default_split=self.dc.train_split, **common)
        if self.dc.dev_manifest:
            dev = load_examples(self._path(self.dc.dev_manifest), **common)
        else:
            dev = load_examples(manifest, split=self.dc.dev_split, default_split=self.dc.train_split, **common)
        if not any(dev.by_task.values()):
            dev = None
        self._main_log(f"data: train {train.counts()}, dev {dev.counts() if dev else 'none'}")
        return train, dev

    # ------------------------------------------------------------------ run folder
    def _prepare_out(self) -> Optional[Any]:
        ckpt = None
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            gone = clean_partial(self.out)
            if gone:
                log.warning(f"removed unfinished checkpoint writes: {gone}")
        barrier(self.info)
        latest = latest_checkpoint(self.out)
        if latest is not None and not self.resume:
            raise ConfigError(f"{self.out} already holds checkpoints of a run; pass --resume to continue it, or choose another --out")
        if latest is not None:
            ckpt, skipped = load_latest_valid(self.out)
            for why in skipped:
                log.warning(f"skipping checkpoint {why}")
            if ckpt is None:
                raise CheckpointError(f"{self.out}: no checkpoint loads ({'; '.join(skipped)}); delete the run folder to start over")
            self._main_log(f"resuming from {ckpt.path} (stage {ckpt.state.stage}, global step {ckpt.state.global_step})")
        elif self.resume:
            self._main_log(f"--resume: no checkpoint in {self.out}; starting from scratch")
        if self.info.is_main:
            resolved = OmegaConf.to_yaml(self.config, resolve=True)
            saved = self.out / "config.yaml"
            if ckpt is not None and saved.is_file() and saved.read_text() != resolved:
                log.warning(f"the config differs from the one this run started with ({saved}); continuing with the new one")
            saved.write_text(resolved)
            log_path = self.out / "log.jsonl"
            if log_path.is_file():  # drop records past the checkpoint we resume from
                keep_until = ckpt.state.global_step if ckpt is not None else 0
                lines, broken = read_log(log_path)
                if broken:
                    log.warning(f"{log_path}: dropped {broken} unreadable line(s) (a write cut short)")
                kept = [json.dumps(rec) for rec in lines if rec.get("step", 0) <= keep_until]
                write_text_atomic(log_path, "".join(ln + "\n" for ln in kept))
        return ckpt

    def _record(self, step: int, scalars: dict[str, float]) -> None:
        if not self.info.is_main:
            return
        with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")
        if self.writer is not None:
            for k, v in scalars.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, step)

    # ------------------------------------------------------------------ saving
    def _model_state(self, module: nn.Module) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def _optim_state(self, module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def _checkpoint(self, module: nn.Module, optimizer: Optional[torch.optim.Optimizer], state: TrainState) -> None:
        weights = self._model_state(module)
        opt = self._optim_state(module, optimizer) if optimizer is not None else None
        if self.info.is_main:
            save_checkpoint(self.out, state, weights, opt, keep=self.tc.keep_checkpoints)
        barrier(self.info)

    def _save_model(self, model, module: nn.Module, directory: Path, extra: dict[str, Any]) -> None:
        from ..model import SpeechDiffusionModel

        if self.strategy == "fsdp":
            weights = self._model_state(module)
            if self.info.is_main:
                copy = SpeechDiffusionModel(self.model_cfg, base_dir=self.base_dir)
                copy.load_state_dict(weights)
                copy.save(directory, extra={"training": extra})
        elif self.info.is_main:
            model.save(directory, extra={"training": extra})
        barrier(self.info)

    # ------------------------------------------------------------------ steps
    def _train_step(self, wrapped: nn.Module, optimizer, items, examples: ExampleSet, stage_idx: int, step: int, pad_id: int):
        info, accum = self.info, self.tc.grad_accum
        chunks = info.world_size * accum
        seqs = [examples.by_task[task][i].seq for task, i in items]
        by_tokens = getattr(self.objective.config, "normalize", "token") == "token"
        total = sum(int(s.target.sum()) for s in seqs) if by_tokens else len(seqs)
        loss_sum = torch.zeros((), device=info.device)
        for a in range(accum):
            c = a * info.world_size + info.rank
            chunk = shard(seqs, chunks, c)
            batch = {k: v.to(info.device) for k, v in collate(chunk, pad_id).items()}  # [b, L] each
            share = (int(batch["target"].sum()) if by_tokens else len(chunk)) / max(1, total)
            last = a == accum - 1
            with self._sync(wrapped, last), self._autocast():
                loss = wrapped(batch, generator(self.tc.seed, "noise", stage_idx, step, c))
            (loss * (share * info.world_size)).backward()  # DDP/FSDP average over processes
            loss_sum += loss.detach().float() * share
        params = [p for p in wrapped.parameters() if p.requires_grad]
        max_norm = self.tc.max_grad_norm if self.tc.max_grad_norm is not None else math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens = sum(len(s.ids) for s in seqs)
        return float(all_reduce_sum(loss_sum, info)), float(norm), tokens

    def _sync(self, wrapped: nn.Module, last: bool):
        if last:
            return contextlib.nullcontext()
        if hasattr(wrapped, "no_sync"):  # DDP
            return wrapped.no_sync()
        if hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2
            wrapped.set_requires_gradient_sync(False)

            @contextlib.contextmanager
            def resync():
                try:
                    yield
                finally:
                    wrapped.set_requires_gradient_sync(True)

            return resync()
        return contextlib.nullcontext()

    @torch.no_grad()
    def evaluate(self, wrapped: nn.Module, dev: ExampleSet, tasks: list[str], pad_id: int) -> dict[str, float]:
        """Dev loss at each fixed t of train.eval_times (token-normalised), per task and overall.

        An objective whose loss has no t (``time_dependent = False``, e.g. autoregressive) is evaluated
        once, under the first of eval_times (the hybrid one has: the t of its speech targets)."""
        times = list(self.tc.eval_times) if self.objective.time_dependent else list(self.tc.eval_times)[:1]
        wrapped.eval()
        sums: dict[tuple[str, float], list[float]] = {}
        try:
            for task in tasks:
                exs = dev.by_task.get(task, [])[: self.dc.dev_max_examples]
                if not exs:
                    continue
                exs = sorted(exs, key=len)
                size = self.dc.dev_batch_size
                for bi in range(0, len(exs), size):
                    batch = {k: v.to(self.info.device) for k, v in collate([e.seq for e in exs[bi : bi + size]], pad_id).items()}
                    count = float(batch["target"].sum())
                    for ti, t in enumerate(times):
                        with self._autocast():
                            loss = wrapped(batch, generator(self.tc.seed, "dev", task, bi, ti), fixed_t=t)
                        acc = sums.setdefault((task, t), [0.0, 0.0])
                        acc[0] += float(loss) * count
                        acc[1] += count
        finally:
            wrapped.train()
        out: dict[str, float] = {}
        for t in times:
            tot = [sum(v[0] for (tk, tt), v in sums.items() if tt == t), sum(v[1] for (tk, tt), v in sums.items() if tt == t)]
            if tot[1]:
                out[f"dev/loss_t{t:g}"] = tot[0] / tot[1]
            for (task, tt), v in sums.items():
                if tt == t:
                    out[f"dev/{task}/loss_t{t:g}"] = v[0] / v[1]
        per_t = [out[f"dev/loss_t{t:g}"] for t in times if f"dev/loss_t{t:g}" in out]
        if per_t:
            out["dev/loss"] = sum(per_t) / len(per_t)
        return out

    # ------------------------------------------------------------------ main loop
    def run(self) -> TrainResult:
        self.info = init_distributed(self.tc.device)
        lock = RunLock(self.out)
        try:
            if self.info.is_main:
                lock.acquire()  # before anything touches the run folder
            return self._run()
        finally:
            lock.release()
            shutdown(self.info)

    def _run(self) -> TrainResult:
        from tqdm.auto import tqdm

        info, tc = self.info, self.tc
        self.strategy = resolve_strategy(tc.strategy, info)
        ckpt = self._prepare_out()
        model, tm = self._build_model()
        if ckpt is not None:
            model.load_state_dict(ckpt.model)
            restore_rng(ckpt.rng["tensors"], ckpt.rng["meta"])
        train, dev = self._load_data(model)
        pad_id = model.vocab.pad_id
        self.writer = None
        if tc.tensorboard and info.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=ckpt.state.global_step + 1 if ckpt else None)
        if self.strategy == "fsdp":
            shard_fsdp(tm, info, mixed_bf16=self.use_bf16 and info.device.type == "cuda")
        result = TrainResult(out=self.out, model_dir=self.out / "model")
        state = ckpt.state if ckpt is not None else TrainState()
        for si, stage in enumerate(tc.stages):
            if si < state.stage:
                continue
            where = f"train.stages[{si}]"
            select_trainable(tm, list(stage.train), list(stage.freeze), where)
            wrapped = wrap_ddp(tm, info) if self.strategy == "ddp" else tm
            optimizer = build_optimizer(wrapped, stage.lr, tc.weight_decay, tuple(tc.betas), tc.adam_eps, fused=self.strategy != "fsdp")
            mixture = normalise_mixture(dict(stage.mixture or {}), train.counts(), f"{where}.mixture")
            lengths = {t: [len(e) for e in train.by_task[t]] for t in mixture}
            batcher = MixtureBatcher(lengths, mixture, self.dc.batch_size, self.dc.bucket_batches, (tc.seed, si))
            if ckpt is not None and state.stage == si and state.step > 0:
                from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

                set_optimizer_state_dict(wrapped, optimizer, ckpt.optimizer, options=StateDictOptions(full_state_dict=True))
                batcher.load_state_dict(state.data)
            start = state.step if state.stage == si else 0
            bar = tqdm(total=stage.steps, initial=start, desc=f"{stage.name}", disable=not (info.is_main and tc.progress), dynamic_ncols=True)
            for step in range(start, stage.steps):
                t0 = time.perf_counter()
                lr = lr_at(step, stage.lr, stage.warmup_steps, stage.steps, stage.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss, norm, tokens = self._train_step(wrapped, optimizer, batcher.next_batch(), train, si, step, pad_id)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"stage {stage.name!r} step {step}: the loss is {loss}; lower the learning rate or check the data")
                tps = tokens / max(time.perf_counter() - t0, 1e-9)
                state = TrainState(stage=si, step=step + 1, global_step=state.global_step + 1, data=batcher.state_dict())
                result.losses[state.global_step] = loss
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tps:,.0f}")
                if state.global_step % tc.log_every == 0 or step + 1 == stage.steps:
                    self._record(state.global_step, {"train/loss": loss, "train/lr": lr, "train/grad_norm": norm, "train/tokens_per_s": tps, "stage": si})
                if dev is not None and ((tc.eval_every and state.global_step % tc.eval_every == 0) or step + 1 == stage.steps):
                    metrics = self.evaluate(wrapped, dev, sorted(mixture), pad_id)
                    result.dev.append({"step": state.global_step, **metrics})
                    self._record(state.global_step, metrics)
                if state.global_step % tc.checkpoint_every == 0 and step + 1 < stage.steps:
                    self._checkpoint(wrapped, optimizer, state)
            bar.close()
            self._save_model(model, wrapped, self.out / "stages" / stage.name / "model", {"stage": stage.name, "global_step": state.global_step})
            state = TrainState(stage=si + 1, step=0, global_step=state.global_step)
            self._checkpoint(wrapped, None, state)
        self._save_model(model, tm, result.model_dir, {"stages": [s.name for s in tc.stages], "global_step": state.global_step})
        if self.writer is not None:
            self.writer.close()
        return result


PATH_KEYS = ("manifest", "dev_manifest", "unit_store", "audio_root", "init_from", "out", "path", "text_tokenizer")


def absolute_path_overrides(overrides: list[str] | tuple[str, ...]) -> list[str]:
    """Relative paths given as overrides are relative to the working directory (those in the
    YAML file stay relative to the file's folder)."""
    out = []
    for item in overrides:
        key, sep, value = item.partition("=")
        last = key.rsplit(".", 1)[-1]
        if sep and value and value not in ("null", "???") and (last in PATH_KEYS or last.endswith("_path")) and not Path(value).is_absolute():
            item = f"{key}={Path(value).resolve()}"
        out.append(item)
    return out


def train(config: str | Path | DictConfig, overrides: list[str] | tuple[str, ...] = (), out: str | Path | None = None, resume: bool = False) -> TrainResult:
    """Python entry point: ``train("configs/train_tiny.yaml", ["data.manifest=..."], out="runs/x")``.

    Relative paths in ``overrides`` are read against the working directory."""
    from ..compose import load_config

    overrides = absolute_path_overrides(overrides)
    if isinstance(config, (str, Path)):
        cfg, base, name = load_config(config, overrides), Path(config).parent, Path(config).stem
    else:
        cfg, base, name = load_config(config, overrides), None, "run"
    return Trainer(cfg, base_dir=base, out=out, resume=resume, name=name).run()


__all__ = ["StageConfig", "TrainConfig", "TrainResult", "Trainer", "train", "DataError", "write_json_atomic"]
