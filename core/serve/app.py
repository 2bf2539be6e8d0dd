"""The logic behind ``diffuspeech serve``, apart from HTTP: model info, generate, stream, audio store.

:class:`ServeApp` takes form fields (strings, and the uploaded audio as bytes), checks them, runs
the pipeline one request at a time (a lock: concurrent requests queue), and returns JSON-ready
dicts. Every input problem is a :class:`RequestError` with the HTTP status to answer and a message
that names the field and the fix.
"""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import torch

from ..audio import AudioError, load_audio
from ..errors import UserError
from ..formats import TARGET
from ..modality import CODE_MODALITY, SPEECH, SPEECH_FEATURES, TEXT

MAX_UPLOAD_BYTES = 10 << 20  # 10 MiB of audio per request
MAX_SECONDS = 30.0  # longest question accepted
AUDIO_KEPT = 64  # generated answers kept for /api/audio/<id>.wav (oldest dropped first)
KNOBS = {  # form field -> (type, what it is); each overrides the model's generation section for one request
    "steps": (int, "denoising steps"),
    "block_length": (int, "semi-autoregressive block length"),
    "temperature": (float, "sampling temperature (0 = greedy)"),
    "kv_cache": (str, "none | prefix | dual"),
    "cfg_scale": (float, "classifier-free guidance scale"),
    "mode": (str, "diffusion | autoregressive | hybrid | interleaved"),
}


class RequestError(UserError):
    """A bad request: ``status`` is the HTTP status to answer (400, 404, 413, 422)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ServeApp:
    def __init__(self, pipe: Any, model_name: str = "", max_upload_bytes: int = MAX_UPLOAD_BYTES, max_seconds: float = MAX_SECONDS) -> None:
        self.pipe, self.model_name = pipe, model_name
        self.max_upload_bytes, self.max_seconds = max_upload_bytes, max_seconds
        self.lock = threading.Lock()  # one generation at a time per model; other requests wait their turn
        self.audio: OrderedDict[str, bytes] = OrderedDict()

    # ------------------------------------------------------------------ model
    def model_info(self) -> dict[str, Any]:
        from ..registry import get_registry

        model = self.pipe.model
        tasks = {}
        for name, task in model.tasks.items():
            tasks[name] = {
                "inputs": [{"field": s.field, "modality": s.modality} for s in task.segments if s.role != TARGET],
                "targets": [{"field": s.field, "modality": s.modality} for s in task.segments if s.role == TARGET],
            }
        defaults = dataclasses.asdict(self.pipe.defaults)
        prov = getattr(model, "provenance", lambda: {})()
        return {
            "model": self.model_name,
            "tasks": tasks,
            "components": prov.get("components", {}),
            "generation": {k: defaults[k] for k in KNOBS if k in defaults},
            "samplers": get_registry().names("samplers"),
            "sampler": _node_name(model.config.get("sampler"), "low_confidence"),
            "has_vocoder": model.vocoder is not None,
            "limits": {"max_upload_bytes": self.max_upload_bytes, "max_seconds": self.max_seconds},
        }

    # ------------------------------------------------------------------ requests
    def parse(self, form: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any], Optional[str]]:
        """``(task, inputs, decoding overrides, sampler name)`` from form fields, or RequestError."""
        task_name = str(form.get("task") or "")
        tasks = self.pipe.model.tasks
        if task_name not in tasks:
            raise RequestError(f"task: {task_name!r} is not a task of this model; choose one of: {', '.join(tasks)}", 422)
        inputs: dict[str, Any] = {}
        for seg in tasks[task_name].segments:
            if seg.role == TARGET:
                continue
            if seg.modality in (SPEECH, SPEECH_FEATURES):
                data = form.get("audio")
                if not isinstance(data, (bytes, bytearray)) or not data:
                    raise RequestError(f"audio: task {task_name!r} takes speech: upload a wav file (field 'audio') or record one", 422)
                inputs[seg.field] = self.read_audio(bytes(data))
            elif seg.modality == TEXT:
                text = form.get("text")
                if not isinstance(text, str) or not text.strip():
                    raise RequestError(f"text: task {task_name!r} takes text: fill in the field 'text'", 422)
                inputs[seg.field] = text.strip()
        overrides: dict[str, Any] = {}
        for key, (kind, what) in KNOBS.items():
            raw = form.get(key)
            if raw in (None, "", b""):
                continue
            try:
                overrides[key] = kind(raw.decode() if isinstance(raw, bytes) else raw)
            except (TypeError, ValueError):
                raise RequestError(f"{key}: expected {kind.__name__} ({what}), got {raw!r}", 422) from None
        sampler = form.get("sampler") or None
        if sampler is not None:
            from ..registry import get_registry

            names = get_registry().names("samplers")
            if sampler not in names:
                raise RequestError(f"sampler: unknown sampler {sampler!r}; choose one of: {', '.join(names)}", 422)
        return task_name, inputs, overrides, sampler

    def read_audio(self, data: bytes) -> torch.Tensor:
        """Uploaded bytes -> ``[samples]`` at the model's input rate, with the checks of ``generate``."""
        if len(data) > self.max_upload_bytes:
            raise RequestError(f"audio: {len(data)} bytes is over the {self.max_upload_bytes} byte limit", 413)
        rate = self.input_rate()
        fd, tmp = tempfile.mkstemp(suffix=".wav")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            seconds = _declared_seconds(tmp)
            if seconds is not None and seconds > self.max_seconds:
                raise RequestError(f"audio: {seconds:.1f} s is longer than the {self.max_seconds:g} s this server accepts", 413)
            wav = load_audio(tmp, rate)
        except AudioError as exc:
            raise RequestError(f"audio: {str(exc).replace(tmp, 'the upload')}", 422) from None
        finally:
            Path(tmp).unlink(missing_ok=True)
        if wav.numel() == 0:
            raise RequestError("audio: the upload has no samples", 422)
        if wav.numel() > self.max_seconds * rate:
            raise RequestError(f"audio: {wav.numel() / rate:.1f} s is longer than the {self.max_seconds:g} s this server accepts", 413)
        return wav

    def input_rate(self) -> int:
        model = self.pipe.model
        if model.tokenizer is not None:
            return int(model.tokenizer.sample_rate)
        if model.encoder is not None:
            return int(model.encoder.sample_rate)
        return 16000

    def generate(self, form: dict[str, Any]) -> dict[str, Any]:
        task, inputs, overrides, sampler = self.parse(form)
        t0 = time.perf_counter()
        with self.lock, self._sampler(sampler):
            try:
                out = self.pipe.run(task, inputs, record_trajectory=True, **overrides)
            except (UserError, ValueError) as exc:
                raise RequestError(str(exc), 422) from None
        return self.result(task, out, time.perf_counter() - t0)

    def stream(self, parsed: tuple) -> Iterator[dict[str, Any]]:
        """Events for server-sent events from :meth:`parse`'s result: ``{"kind": "text"|"audio", ...}`` as
        targets finish, then ``done`` (or ``error``)."""
        task, inputs, overrides, sampler = parsed
        t0 = time.perf_counter()
        with self.lock, self._sampler(sampler):
            try:
                for chunk in self.pipe.stream(task, inputs, record_trajectory=True, **overrides):
                    if chunk.kind == "text":
                        yield {"kind": "text", "field": chunk.field, "text": chunk.value, "seconds": chunk.elapsed_s}
                    elif chunk.kind == "audio":
                        yield {"kind": "audio", "field": chunk.field, "audio_url": self.keep_audio(chunk.value, chunk.sample_rate),
                               "seconds": chunk.elapsed_s}
                    else:
                        yield {"kind": "done", **self.result(task, chunk.value, time.perf_counter() - t0)}
            except Exception as exc:  # noqa: BLE001 - the headers are sent: the error travels as an event
                yield {"kind": "error", "error": str(exc)}

    def _sampler(self, name: Optional[str]):
        """For one request: the model's sampler replaced by the registered ``name`` (under the lock)."""
        import contextlib

        if name is None or name == _node_name(self.pipe.model.config.get("sampler"), "low_confidence"):
            return contextlib.nullcontext()  # the model's own sampler, with its configured settings
        from ..compose import build_component

        model = self.pipe.model

        @contextlib.contextmanager
        def swap():
            before = model.components.get("sampler")
            model.components["sampler"] = build_component("samplers", name, "sampler")
            try:
                yield
            finally:
                if before is None:
                    model.components.pop("sampler", None)
                else:
                    model.components["sampler"] = before

        return swap()

    # ------------------------------------------------------------------ results
    def result(self, task: str, out: Any, seconds: float) -> dict[str, Any]:
        fields = {k: (v if isinstance(v, str) else [int(u) for u in v]) for k, v in out.fields.items()}
        spec = self.pipe.model.tasks[task]
        text_field = next((s.field for s in spec.segments if s.role == TARGET and s.modality == TEXT and s.field != "thinking"), None)
        audio_url = None
        for wav in out.audio.values():
            if wav.numel():
                audio_url = self.keep_audio(wav, out.sample_rate)
                break
        trajectory = None
        if out.trajectory is not None:
            trajectory = {
                "revealed": out.trajectory.tolist(),  # [L] step at which each position was revealed, -1: given
                "modality": [CODE_MODALITY[int(c)] for c in out.modality.tolist()],
                "target": out.target.tolist(),
                "steps": int(out.steps),
            }
        return {
            "task": task, "fields": fields, "thinking": out.fields.get("thinking"), "text": out.fields.get(text_field) if text_field else None,
            "audio_url": audio_url, "trajectory": trajectory, "steps": int(out.steps), "forward_passes": int(out.forward_passes),
            "warnings": list(out.warnings), "seconds": round(seconds, 3),
        }

    def keep_audio(self, wav: torch.Tensor, sample_rate: int) -> str:
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, wav.detach().float().cpu().clamp(-1, 1).numpy(), int(sample_rate), format="WAV", subtype="PCM_16")
        key = uuid.uuid4().hex[:16]
        self.audio[key] = buf.getvalue()
        while len(self.audio) > AUDIO_KEPT:
            self.audio.popitem(last=False)
        return f"/api/audio/{key}.wav"


def _node_name(node: Any, default: str) -> str:
    if node is None:
        return default
    return str(node if isinstance(node, str) else node.get("name", default))


def _declared_seconds(path: str) -> Optional[float]:
    """The duration a file's header declares (before anything is decoded), or None when unreadable."""
    import soundfile as sf

    try:
        info = sf.info(path)
    except Exception:  # noqa: BLE001 - load_audio names the problem
        return None
    return info.frames / info.samplerate if info.samplerate else None
