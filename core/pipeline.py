"""Inference pipeline: task format -> canvas -> diffusion engine -> text + units -> audio.

    pipe = Pipeline.from_pretrained("model_dir")   # or Pipeline(SpeechDiffusionModel.load("model_dir"))
    out = pipe.run("s2s", {"question_speech": "question.wav"})
    out.fields["thinking"], out.fields["answer_speech"] (units), out.audio["answer_speech"] (wav)

Speech inputs may be a wav path, a waveform tensor at the tokenizer's rate, or units.
Decoding settings come from the model config's ``generation`` section, overridable per call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from .attention import check_causal_mask, check_next_token_positions, policy_mask, states_before
from .audio import AudioError, checked_speed_rate, is_silent, load_audio, speed_perturb
from .compose import ConfigError
from .formats import TARGET, TaskSpec, collate, layout, split_targets
from .modality import MODALITY_CODE, SPEECH, SPEECH_FEATURES, TEXT
from .model import SpeechDiffusionModel, resolve_model_dir
from .objective import mode_mismatch_note
from .registry import RegistryError, get_registry
from .sampling.generation import CanvasSpec, GenerationResult, StepInfo, diffusion_steps, generate
from .sampling.options import DecodeOptions, GenerationError, check_options, validate_generation_section
from .speech_features import SpeechFeatures, SplicedBackbone

SpeechInput = Union[str, Path, torch.Tensor]


@dataclass
class PipelineOutput:
    task: str
    fields: dict[str, Any]  # target field -> text (str) or units ([frames] long)
    audio: dict[str, torch.Tensor]  # speech target field -> waveform [samples] (when the model has a vocoder)
    sample_rate: Optional[int]
    tokens: torch.Tensor  # [L] final canvas
    trajectory: Optional[torch.Tensor]  # [L] step at which each position was revealed (-1: never masked)
    modality: torch.Tensor  # [L] modality codes
    target: torch.Tensor  # [L] bool
    steps: int
    forward_passes: int  # with speed_votes: summed over the copies
    warnings: list[str] = field(default_factory=list)
    agreement: Optional[float] = None  # with speed_votes: share of the copies whose text targets match the chosen one


class Pipeline:
    def __init__(self, model: SpeechDiffusionModel, device: str | torch.device = "cpu") -> None:
        if model.backbone is None:
            raise ConfigError("backbone: the model has no backbone section; a pipeline needs one")
        self.model = model
        self.device = torch.device(device)
        for module in (model.backbone, model.encoder, model.adapters):
            if module is not None:
                module.to(self.device).eval()
        self.features: Optional[SpeechFeatures] = SpeechFeatures.of(model)
        self.defaults: DecodeOptions = validate_generation_section(model.config.get("generation", {}) or {})

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | None = None,  # a saved model folder, a registered model's name, or None (the default model)
        overrides: list[str] | tuple[str, ...] = (),  # dotlist config overrides, e.g. ["generation.steps=8"]
        device: str | torch.device = "cpu",
        allow_version_mismatch: bool = False,
        allow_external_paths: bool = False,  # trust a model folder whose config points outside it
    ) -> Pipeline:
        """Load a saved (or registered, e.g. embedded) model and wrap it in a pipeline."""
        path = resolve_model_dir(None if model is None else str(model))
        loaded = SpeechDiffusionModel.load(
            path, overrides=list(overrides), allow_version_mismatch=allow_version_mismatch, allow_external_paths=allow_external_paths
        )
        return cls(loaded, device=device)

    def objective_note(self, generation_mode: str) -> list[str]:
        """The mode-mismatch warning for decoding this model with ``generation_mode`` (see
        :func:`diffuspeech.objective.mode_mismatch_note`)."""
        node = self.model.config.get("objective")
        name = "diffusion" if node is None else str(node if isinstance(node, str) else node.get("name", "diffusion"))
        try:
            cls = get_registry().get("objectives", name)
        except RegistryError:
            return []
        return mode_mismatch_note(generation_mode, name, cls)

    # ------------------------------------------------------------------ inputs
    def speech_units(self, value: SpeechInput, name: str = "input") -> tuple[torch.Tensor, list[str]]:
        """A wav path / waveform / unit tensor -> ``([frames] units, warnings)``."""
        warnings: list[str] = []
        if isinstance(value, torch.Tensor) and value.dtype in (torch.long, torch.int32, torch.int16):
            return value.long().reshape(-1), warnings
        tok = self.model.tokenizer
        if tok is None:
            raise ConfigError("tokenizer: the model has no speech tokenizer; pass units instead of audio")
        wav = load_audio(value, tok.sample_rate) if isinstance(value, (str, Path)) else value.float().reshape(-1)
        if wav.numel() == 0:
            raise ValueError(f"{name}: the audio is empty")
        if is_silent(wav):
            warnings.append(f"{name}: the audio is silent; the answer will not be meaningful")
        units = tok.encode_one(wav)
        return units, warnings

    def feature_audio(self, value: SpeechInput, name: str = "input") -> tuple[torch.Tensor, list[str]]:
        """A wav path / waveform -> ``([samples] at the encoder's rate, warnings)`` for a speech_features segment."""
        if self.features is None:
            raise ConfigError("encoder: the task has a speech_features segment but the model has no encoder and adapters")
        if isinstance(value, torch.Tensor) and not value.is_floating_point():
            raise ValueError(f"{name}: this model hears audio through its encoder (speech_features); pass a wav file or a waveform, not units")
        wav = load_audio(value, self.features.sample_rate) if isinstance(value, (str, Path)) else value.float().reshape(-1)
        self.features.check_audio(wav.numel(), name)
        return wav, [f"{name}: the audio is silent; the answer will not be meaningful"] if is_silent(wav) else []

    def prepare_inputs(self, task: TaskSpec, inputs: dict[str, Any], name: str) -> tuple[dict[str, Any], list[str]]:
        example, warnings = {}, []
        for seg in task.segments:
            if seg.role == TARGET:
                continue
            if seg.field not in inputs:
                raise ValueError(f"{name}: task needs input field {seg.field!r} ({seg.modality})")
            value = inputs[seg.field]
            if seg.modality == SPEECH_FEATURES:
                value, w = self.feature_audio(value, name=f"{name}.{seg.field}")
                warnings += w
            elif seg.modality == SPEECH:
                value, w = self.speech_units(value, name=f"{name}.{seg.field}")
                warnings += w
                if seg.max_len is not None and len(value) > seg.max_len:
                    warnings.append(
                        f"{name}.{seg.field}: {len(value)} units is over the {seg.max_len} the model was trained on; "
                        f"keeping the first {seg.max_len}"
                    )
                    value = value[: seg.max_len]
            example[seg.field] = value
        return example, warnings

    def canvas(self, task_name: str, examples: list[dict[str, Any]], lengths: dict[str, int]) -> tuple[CanvasSpec, dict]:
        vocab = self.model.vocab
        task = self.task(task_name)
        slots = self.features.slots if self.features is not None else None
        seqs = [layout(task_name, task, ex, vocab, canvas=True, target_lengths=lengths, feature_slots=slots) for ex in examples]
        batch = collate(seqs, vocab.pad_id)
        b, length = batch["ids"].shape
        lo = torch.zeros(b, length, dtype=torch.long)
        hi = torch.full((b, length), vocab.size, dtype=torch.long)
        for modality in (TEXT, SPEECH):
            sel = batch["target"] & (batch["modality"] == MODALITY_CODE[modality])
            r_lo, r_hi = vocab.allowed_range(modality)
            lo[sel], hi[sel] = r_lo, r_hi
        targets = [s for s in task.segments if s.role == TARGET]
        ends = torch.tensor([vocab.text_end_id if s.modality == TEXT else vocab.speech_end_id for s in targets])
        attention = self.model.attention
        attn = policy_mask(attention, batch["modality"], batch["valid"], batch["target"]) if attention is not None else None
        dev = self.device
        spec = CanvasSpec(
            tokens=batch["ids"].to(dev),
            mask_id=vocab.mask_id,
            valid=batch["valid"].to(dev),
            modality=batch["modality"].to(dev),
            segment=batch["segment"].to(dev),
            condition=batch["condition"].to(dev),
            allowed_lo=lo.to(dev),
            allowed_hi=hi.to(dev),
            segment_end_id=ends.to(dev),
            segment_fill_id=ends.to(dev),
            attention_mask=None if attn is None else attn.to(dev),
        )
        return spec, batch

    def task(self, name: str) -> TaskSpec:
        try:
            return self.model.tasks[name]
        except KeyError:
            raise ConfigError(f"unknown task {name!r}; this model's tasks: {', '.join(self.model.tasks)}") from None

    # ------------------------------------------------------------------ run
    def run_batch(
        self,
        task_name: str,
        inputs: list[dict[str, Any]],
        *,
        record_trajectory: bool = False,
        progress: bool = False,
        on_step: Callable[[StepInfo], None] | None = None,
        **overrides: Any,
    ) -> list[PipelineOutput]:
        """Generate the target segments of ``task_name`` for every input dict."""
        task = self.task(task_name)
        rates = self.vote_rates(task, overrides.pop("speed_votes", self.defaults.speed_votes))
        prepared = [p for i, x in enumerate(inputs) for p in self.prepare_copies(task, x, f"input[{i}]", rates)]
        return self.run_prepared(
            task_name, prepared, copies=max(1, len(rates)), record_trajectory=record_trajectory, progress=progress, on_step=on_step, **overrides
        )

    # ------------------------------------------------------------------ speed votes
    def vote_rates(self, task: TaskSpec, rates: Any) -> list[float]:
        """The checked ``generation.speed_votes`` for ``task``: [] when off, or when the task has no
        speech condition or no text target to vote on."""
        if rates is None:
            return []
        if isinstance(rates, (str, bytes)) or not hasattr(rates, "__iter__"):
            raise ConfigError(f"generation.speed_votes: expected a list of rates such as [1.0, 0.9, 1.1], got {rates!r}")
        try:
            if any(isinstance(r, bool) for r in rates):
                raise AudioError("booleans are not rates")
            checked = [checked_speed_rate(r) for r in rates]
        except AudioError:
            raise ConfigError(f"generation.speed_votes: rates must be finite numbers > 0 (e.g. [1.0, 0.9, 1.1]), got {list(rates)}") from None
        speech_in = any(s.role != TARGET and s.modality == SPEECH for s in task.segments)
        text_out = any(s.role == TARGET and s.modality == TEXT for s in task.segments)
        return checked if speech_in and text_out and checked not in ([], [1.0]) else []

    def prepare_copies(self, task: TaskSpec, inputs: dict[str, Any], name: str, rates: list[float]) -> list[tuple[dict[str, Any], list[str]]]:
        """:meth:`prepare_inputs` of ``inputs`` once, or once per rate of :meth:`vote_rates` (speech
        conditions played that many times as fast); decode with ``run_prepared(copies=len(rates))``."""
        if not rates:
            return [self.prepare_inputs(task, inputs, name)]
        waves = self.speech_waveforms(task, inputs, name)  # each file read once for all the copies
        sr = self.model.tokenizer.sample_rate
        return [self.prepare_inputs(task, {**inputs, **{f: speed_perturb(w, sr, r) for f, w in waves.items()}}, name) for r in rates]

    def speech_waveforms(self, task: TaskSpec, inputs: dict[str, Any], name: str) -> dict[str, torch.Tensor]:
        """Speech condition field -> ``[T]`` waveform at the tokenizer's rate (the audio speed votes re-read)."""
        tok = self.model.tokenizer
        waves = {}
        for seg in task.segments:
            if seg.role == TARGET or seg.modality != SPEECH or seg.field not in inputs:
                continue
            value = inputs[seg.field]
            if tok is None or (isinstance(value, torch.Tensor) and value.dtype in (torch.long, torch.int32, torch.int16)):
                raise ValueError(
                    f"{name}.{seg.field}: generation.speed_votes re-reads the audio at other speeds, but this input is "
                    "speech units (or the model has no tokenizer); pass audio, or set generation.speed_votes=[]"
                )
            waves[seg.field] = load_audio(value, tok.sample_rate) if isinstance(value, (str, Path)) else value.float().reshape(-1)
        return waves

    @staticmethod
    def majority(task: TaskSpec, copies: list[PipelineOutput]) -> PipelineOutput:
        """The copy whose text targets (e.g. thinking + answer) most copies agree on; ties: the earliest."""
        text = [s.field for s in task.segments if s.role == TARGET and s.modality == TEXT]
        keys = [tuple(c.fields[f] for f in text) for c in copies]
        votes = {k: keys.count(k) for k in keys}
        best = max(range(len(keys)), key=lambda j: (votes[keys[j]], -j))
        warnings = list(dict.fromkeys(w for c in copies for w in c.warnings))  # every copy's, once
        return dataclasses.replace(
            copies[best],
            forward_passes=sum(c.forward_passes for c in copies),
            warnings=warnings,
            agreement=votes[keys[best]] / len(copies),
        )

    def run_prepared(
        self,
        task_name: str,
        prepared: list[tuple[dict[str, Any], list[str]]],
        *,
        copies: int = 1,
        record_trajectory: bool = False,
        progress: bool = False,
        on_step: Callable[[StepInfo], None] | None = None,
        **overrides: Any,
    ) -> list[PipelineOutput]:
        """Like ``run_batch`` on the ``(example, warnings)`` pairs of ``prepare_inputs`` (or, with
        ``copies`` > 1, of :meth:`prepare_copies`: each run of ``copies`` rows is one input's speed
        copies, voted down to one output by :meth:`majority`)."""
        if "speed_votes" in overrides:
            raise ConfigError(
                "speed_votes apply when inputs are prepared: use run_batch(..., speed_votes=...), or "
                "prepare_copies(...) + run_prepared(..., copies=len(rates))"
            )
        if copies < 1 or len(prepared) % copies:
            raise ValueError(f"copies={copies}: the {len(prepared)} prepared rows are not whole groups of {copies} copies per input")
        opts = dataclasses.replace(self.defaults, **overrides) if overrides else self.defaults
        task = self.task(task_name)
        lengths = self.target_lengths(task_name, task, opts)
        spec, batch = self.canvas(task_name, [p[0] for p in prepared], lengths)
        model = self.model
        backbone = self.backbone_for(batch)
        sampler = model.sampler if model.sampler is not None else "low_confidence"
        try:
            check_options(opts)
        except GenerationError as exc:
            raise ConfigError(str(exc)) from None
        diffused = batch["target"]  # [B, L] the positions the diffusion engine fills
        if opts.mode in ("hybrid", "interleaved"):
            diffused = diffused & (batch["modality"] == MODALITY_CODE[SPEECH])
        diffusion_options = dataclasses.replace(
            opts, steps=diffusion_steps(opts, diffused), record_trajectory=record_trajectory or opts.record_trajectory,
            progress=progress or opts.progress,
        )
        scheduler = model.scheduler if opts.use_scheduler else None
        notes: list[str] = []
        if opts.mode == "autoregressive":
            result, notes = self.decode_autoregressive(spec, opts, record_trajectory, progress, on_step, backbone)
        elif opts.mode in ("hybrid", "interleaved"):
            result, notes = self.decode_hybrid(spec, opts, diffusion_options, sampler, record_trajectory, progress, on_step, backbone)
        else:
            result = generate(backbone, spec, diffusion_options, sampler=sampler, scheduler=scheduler, on_step=on_step)
            notes = self.objective_note("diffusion")
        outputs = []
        for i, (_, warnings) in enumerate(prepared):
            warnings = warnings + notes
            valid = batch["valid"][i]
            tokens = result.tokens[i].cpu()[valid]
            segment = batch["segment"][i][valid]
            fields = split_targets(task, tokens, segment, model.vocab)
            audio = {}
            vocoder = model.vocoder
            for seg in task.segments:
                if seg.role == TARGET and seg.modality == SPEECH and vocoder is not None:
                    units = fields[seg.field]
                    if len(units):
                        audio[seg.field] = vocoder.decode_one(units)
                    else:
                        audio[seg.field] = torch.zeros(0)
                        warnings = warnings + [f"the model produced no speech units for {seg.field!r}"]
            outputs.append(
                PipelineOutput(
                    task=task_name,
                    fields=fields,
                    audio=audio,
                    sample_rate=vocoder.sample_rate if vocoder is not None else None,
                    tokens=tokens,
                    trajectory=None if result.trajectory is None else result.trajectory[i].cpu()[valid],
                    modality=batch["modality"][i][valid],
                    target=batch["target"][i][valid],
                    steps=result.steps,
                    forward_passes=result.forward_passes,
                    warnings=warnings,
                )
            )
        if copies > 1:
            outputs = [self.majority(task, outputs[i : i + copies]) for i in range(0, len(outputs), copies)]
        return outputs

    @torch.no_grad()
    def backbone_for(self, batch: dict[str, torch.Tensor]) -> Any:
        """The backbone to decode ``batch`` with: the model's, or a :class:`SplicedBackbone` view that
        gives its speech_features slots the encoder + adapter embeddings of their audio."""
        if "feature_audio" not in batch:
            return self.model.backbone
        embeds = self.features.embed(batch["feature_audio"].to(self.device), batch["feature_lengths"].to(self.device))  # [N, D]
        return SplicedBackbone(self.model.backbone, batch["features"].to(self.device), embeds, self.model.vocab.mask_id)

    @staticmethod
    def target_lengths(task_name: str, task: TaskSpec, opts: DecodeOptions) -> dict[str, int]:
        """Each target's length budget: ``generation.lengths``, else the segment's ``max_len``, else ``default_length``."""
        lengths = {}
        for i, s in enumerate(task.segments):
            if s.role != TARGET:
                continue
            n = opts.lengths.get(s.field, s.max_len if s.max_len is not None else opts.default_length)
            if n is None:
                raise ConfigError(
                    f"task {task_name!r}: target segment {s.field!r} has no length; set generation.lengths.{s.field}=N, "
                    f"tasks.{task_name}.segments.{i}.max_len=N, or generation.default_length=N"
                )
            lengths[s.field] = int(n)
        return lengths

    def attention_name(self) -> str:
        """The model's attention policy as its config names it, for error messages."""
        node = self.model.config.get("attention")
        return "none (full attention)" if node is None else str(node if isinstance(node, str) else node.get("name"))

    def decode_autoregressive(
        self,
        spec: CanvasSpec,
        opts: DecodeOptions,
        record_trajectory: bool,
        progress: bool,
        on_step: Callable[[StepInfo], None] | None,
        backbone: Any = None,  # default: the model's (see backbone_for)
    ) -> tuple[GenerationResult, list[str]]:
        """``generation.mode: autoregressive``: :func:`~diffuspeech.sampling.autoregressive.ar_decode` on the canvas.

        Uses ``temperature``, ``seed`` and ``backend``; the diffusion settings (steps, blocks,
        scheduler, kv_cache) do not apply (the exact causal KV cache is used when the backbone has one)."""
        from .sampling.autoregressive import ARDecodeOptions, ar_decode

        check_causal_mask(spec.attention_mask, self.attention_name(), "generation.mode=autoregressive")
        if opts.cfg_scale > 0:
            raise ConfigError("generation.cfg_scale: classifier-free guidance is not supported with generation.mode=autoregressive; set it to 0")
        notes = self.objective_note("autoregressive")
        options = ARDecodeOptions(
            temperature=opts.temperature, seed=opts.seed, backend=opts.backend, record_trajectory=record_trajectory, progress=progress
        )
        return ar_decode(backbone or self.model.backbone, spec, options, on_step=on_step), notes

    def decode_hybrid(
        self,
        spec: CanvasSpec,
        opts: DecodeOptions,
        diffusion_options: DecodeOptions,
        sampler: Any,
        record_trajectory: bool,
        progress: bool,
        on_step: Callable[[StepInfo], None] | None,
        backbone: Any = None,  # default: the model's (see backbone_for)
    ) -> tuple[GenerationResult, list[str]]:
        """``generation.mode: hybrid`` / ``interleaved`` (TtT): :func:`~diffuspeech.sampling.hybrid.hybrid_decode`.

        Text targets are decoded left to right (``temperature``, ``seed``, ``backend``); speech
        targets by the diffusion engine with every diffusion setting: after all the text (``hybrid``),
        or segment by segment in reading order (``interleaved``: text after a spoken span sees it)."""
        from .sampling.autoregressive import ARDecodeOptions
        from .sampling.hybrid import hybrid_decode, speech_targets

        if opts.cfg_scale > 0:
            raise ConfigError(f"generation.cfg_scale: classifier-free guidance is not supported with generation.mode={opts.mode}; set it to 0")
        notes = self.objective_note(opts.mode)
        text_options = ARDecodeOptions(
            temperature=opts.temperature, seed=opts.seed, backend=opts.backend, record_trajectory=record_trajectory, progress=progress
        )
        text = (spec.tokens == spec.mask_id) & spec.valid & ~speech_targets(spec)  # [B, L]
        predict_from = states_before(text)  # [B, L]
        if bool(predict_from.any()):
            check_next_token_positions(spec.attention_mask, predict_from, self.attention_name(), f"generation.mode={opts.mode}")
        scheduler = self.model.scheduler if opts.use_scheduler else None
        result = hybrid_decode(
            backbone or self.model.backbone, spec, text_options, diffusion_options, sampler=sampler, scheduler=scheduler, on_step=on_step,
            interleaved=opts.mode == "interleaved",
        )
        return result, notes

    def stream(self, task_name: str, inputs: dict[str, Any], min_chunk: int = 1, **overrides: Any):
        """Decode one input and yield text and audio chunks as its targets finish, then the full output
        (see :mod:`diffuspeech.streaming`): ``for chunk in pipe.stream("s2s", {...}, block_length=8): ...``."""
        from .streaming import stream

        return stream(self, task_name, inputs, min_chunk=min_chunk, **overrides)

    def run(self, task_name: str, inputs: dict[str, Any], **kwargs: Any) -> PipelineOutput:
        return self.run_batch(task_name, [inputs], **kwargs)[0]
