"""Streaming output: text and audio chunks while a canvas is still being denoised.

    for chunk in stream(pipe, "s2s", {"question_speech": "q.wav"}, block_length=8):
        chunk.kind, chunk.field, chunk.value, chunk.elapsed_s   # "text" | "audio" | "done"

Generation runs in a worker thread; after every step the engine's ``on_step`` callback looks at each
speech target of the (single) input: the reading-order prefix of its positions that no longer holds
the mask id is final (a revealed position is never re-masked), and when it has grown by at least
``min_chunk`` units (or reached the segment's end token), the new units are voiced and handed out as
an audio chunk. The vocoder runs on the whole final prefix each time and only the new samples are
sent, so the chunks join into exactly the audio of voicing that prefix at once (no seams). Text
targets are sent whole as soon as all of their positions are revealed. The last chunk, ``done``,
carries the complete :class:`~diffuspeech.pipeline.PipelineOutput`.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

import torch

from .formats import TARGET
from .modality import SPEECH, TEXT

__all__ = ["StreamChunk", "stream"]


@dataclass
class StreamChunk:
    kind: str  # "text" (a finished text target) | "audio" (new samples of a speech target) | "done" (the full output)
    field: Optional[str]  # the target field ("thinking", "answer_speech", ...); None for "done"
    value: Any  # text: str; audio: [samples] float waveform; done: PipelineOutput
    elapsed_s: float  # since stream() was called
    units: Optional[torch.Tensor] = None  # audio: the [frames] units these samples voice
    sample_rate: Optional[int] = None  # audio: Hz


def stream(pipe: Any, task_name: str, inputs: dict[str, Any], min_chunk: int = 1, **overrides: Any) -> Iterator[StreamChunk]:
    """Decode one input, yielding :class:`StreamChunk` s as targets finish (see the module docstring)."""
    start = time.perf_counter()
    task = pipe.task(task_name)
    model = pipe.model
    vocab = model.vocab
    example, _ = pipe.prepare_inputs(task, inputs, "input")
    opts = dataclasses.replace(pipe.defaults, **overrides) if overrides else pipe.defaults
    spec, batch = pipe.canvas(task_name, [example], pipe.target_lengths(task_name, task, opts))
    targets = [(i, s) for i, s in enumerate(s for s in task.segments if s.role == TARGET)]
    segment = batch["segment"][0]  # [L]
    positions = {seg.field: (segment == i).nonzero().flatten() for i, seg in targets}  # reading order
    events: queue.Queue = queue.Queue()
    sent_units = {seg.field: 0 for _, seg in targets if seg.modality == SPEECH}
    sent_samples = {f: 0 for f in sent_units}
    sent_text: set[str] = set()
    vocoder = model.vocoder
    end_speech, end_text = vocab.speech_end_id, vocab.text_end_id

    def emit(tokens: torch.Tensor, final: bool) -> None:
        row = tokens[0].cpu()
        for _, seg in targets:
            pos = positions[seg.field]
            ids = row[pos]
            revealed = ids != vocab.mask_id
            if seg.modality == TEXT:
                if seg.field not in sent_text and (bool(revealed.all()) or final):
                    cut = (ids == end_text).nonzero()
                    body = ids[: int(cut[0])] if len(cut) else ids
                    sent_text.add(seg.field)
                    events.put(StreamChunk("text", seg.field, vocab.decode_text(body.tolist()), time.perf_counter() - start))
                continue
            if vocoder is None:
                continue
            frontier = int(revealed.long().cumprod(dim=0).sum())  # leading revealed positions
            prefix = ids[:frontier]
            ended = (prefix == end_speech).nonzero()
            if len(ended):
                prefix = prefix[: int(ended[0])]
            n = int(prefix.numel())
            done = len(ended) > 0 or frontier == len(ids) or final
            if n - sent_units[seg.field] < max(1, min_chunk) and not (done and n > sent_units[seg.field]):
                continue
            units = prefix - vocab.unit_offset
            wav = vocoder.decode_one(units.clamp(0, vocab.num_units - 1))  # [samples] of the whole final prefix
            new = wav[sent_samples[seg.field]:]
            events.put(StreamChunk("audio", seg.field, new, time.perf_counter() - start, units[sent_units[seg.field]:], vocoder.sample_rate))
            sent_units[seg.field], sent_samples[seg.field] = n, int(wav.numel())

    def worker() -> None:
        try:
            out = pipe.run_prepared(task_name, [(example, [])], on_step=lambda info: emit(info.tokens, False), **overrides)[0]
            emit(out.tokens[None], True)
            events.put(StreamChunk("done", None, out, time.perf_counter() - start))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            events.put(exc)

    threading.Thread(target=worker, daemon=True).start()
    while True:
        item = events.get()
        if isinstance(item, BaseException):
            raise item
        yield item
        if item.kind == "done":
            return
