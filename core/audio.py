"""Reading, checking and writing audio: the one place where audio files are opened.

Files are read with soundfile (libsndfile: WAV/FLAC/OGG/... in 8/16/24/32-bit PCM or float),
checked, downmixed to mono and resampled with torchaudio. Every problem raises
:class:`AudioError` (a ``ValueError``) whose message names the file and the problem::

    wav = load_audio("clip.flac", sample_rate=16000)  # [samples] float32
    write_audio("out.wav", wav, 16000)                # atomic: tmp file + rename

Silence is not an error (a silent file is valid audio); :func:`is_silent` detects it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from .atomic import temporary_file
from .errors import UserError

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioError",
    "AudioInfo",
    "audio_info",
    "check_waveform",
    "chunk_spans",
    "downmix",
    "find_audio_files",
    "is_silent",
    "load_audio",
    "resample",
    "write_audio",
]

# File name endings treated as audio when a folder is scanned (anything libsndfile reads).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64", ".caf")


class AudioError(UserError):
    """An audio file (or waveform) that cannot be used; the message names it and the problem."""


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int  # Hz as stored in the file
    frames: int  # samples per channel
    channels: int
    subtype: str  # e.g. PCM_16, PCM_24, PCM_U8, FLOAT

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _open_error(path: Path, exc: Exception) -> AudioError:
    return AudioError(f"{path}: not a readable audio file ({exc}); expected WAV, FLAC, OGG or another format libsndfile reads")


def _wav_declared_frames(path: Path) -> int | None:
    """Frames the RIFF/WAVE header declares in its ``data`` chunk (None if not a plain WAV or unknown).

    libsndfile silently shortens a truncated WAV to the bytes present; comparing with the
    header's declared size is how truncation is detected.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(size)
                    if len(fmt) < 14:
                        return None
                    block_align = struct.unpack("<H", fmt[12:14])[0]
                    if size % 2:
                        f.seek(1, os.SEEK_CUR)
                elif cid == b"data":
                    # 0 and 0xFFFFFFFF are used by streaming writers that never patched the header
                    if not block_align or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                else:
                    f.seek(size + (size % 2), os.SEEK_CUR)
    except OSError:
        return None


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Header information without reading the samples; raises :class:`AudioError`."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: file not found")
    if not p.is_file():
        raise AudioError(f"{p}: not a file")
    try:
        info = sf.info(str(p))
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types
        raise _open_error(p, exc) from None
    return AudioInfo(str(p), int(info.samplerate), int(info.frames), int(info.channels), str(info.subtype))


def check_waveform(wav: torch.Tensor, name: str = "waveform") -> torch.Tensor:
    """Raise :class:`AudioError` if ``wav`` (any shape, time last) is empty or has NaN/inf samples."""
    if wav.numel() == 0 or wav.shape[-1] == 0:
        raise AudioError(f"{name}: contains no samples (empty audio)")
    finite = torch.isfinite(wav)
    if not bool(finite.all()):
        flat = (~finite).reshape(-1, wav.shape[-1]).any(0)  # [S]
        first = int(flat.nonzero()[0, 0])
        raise AudioError(f"{name}: contains NaN or infinite samples (first at sample {first}); the file is corrupt")
    return wav


def downmix(wav: torch.Tensor) -> torch.Tensor:
    """``[channels, samples]`` -> ``[samples]`` by averaging channels (``[samples]`` passes through)."""
    return wav if wav.dim() == 1 else wav.mean(dim=0)


def resample(wav: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling along the last axis (torchaudio's sinc interpolation)."""
    if orig_rate == new_rate:
        return wav
    if orig_rate <= 0 or new_rate <= 0:
        raise AudioError(f"cannot resample from {orig_rate} Hz to {new_rate} Hz: rates must be positive")
    return AF.resample(wav, int(orig_rate), int(new_rate))


def checked_speed_rate(rate: object) -> float:
    """``rate`` as a float, or :class:`AudioError` unless it is a finite number > 0."""
    try:
        value = float(rate)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = float("nan")
    if not (np.isfinite(value) and value > 0):
        raise AudioError(f"speed perturbation rates must be finite and > 0 (e.g. 0.9 or 1.1), got {rate!r}")
    return value


def speed_perturb(wav: torch.Tensor, sample_rate: int, rate: float) -> torch.Tensor:
    """``[T] -> [~T / rate]``: the waveform played ``rate`` times as fast (resampled, then read at the
    original rate), so tempo and every frequency (pitch, formants) scale by ``rate`` together: a new
    speaker-like variant of the same words (Ko et al. 2015, Kaldi's speed perturbation)."""
    value = checked_speed_rate(rate)
    if round(sample_rate * value) < 1:
        raise AudioError(f"speed perturbation rates must be finite and > 0 (e.g. 0.9 or 1.1), got {rate!r}")
    if value == 1.0:
        return wav
    return resample(wav, round(sample_rate * value), sample_rate)  # read as if recorded at rate x sample_rate, brought back


def load_audio(path: str | os.PathLike, sample_rate: int | None, mono: bool = True) -> torch.Tensor:
    """Read an audio file as float32 at ``sample_rate`` (None: the file's own rate).

    Returns ``[samples]`` when ``mono`` (channels averaged) else ``[channels, samples]``.
    Raises :class:`AudioError` for a missing, unreadable, truncated, empty or non-finite file.
    """
    p = Path(path)
    info = audio_info(p)
    declared = _wav_declared_frames(p)
    try:
        with sf.SoundFile(str(p)) as f:
            data = f.read(dtype="float32", always_2d=True)  # [S, C]
    except Exception as exc:  # noqa: BLE001
        raise AudioError(f"{p}: truncated or corrupt audio data ({exc})") from None
    if declared is not None and declared > data.shape[0]:
        raise AudioError(
            f"{p}: truncated file: its header declares {declared} samples but only {data.shape[0]} are present"
        )
    if data.shape[0] == 0:
        raise AudioError(f"{p}: contains no samples (empty audio)")
    wav = torch.from_numpy(np.ascontiguousarray(data.T))  # [C, S]
    check_waveform(wav, str(p))
    if mono:
        wav = downmix(wav)  # [S]
    if sample_rate is not None and info.sample_rate != sample_rate:
        wav = resample(wav, info.sample_rate, sample_rate)
    return wav.contiguous()


def is_silent(wav: torch.Tensor, threshold_db: float = -60.0) -> bool:
    """True when the peak amplitude is below ``threshold_db`` dBFS (or the waveform is empty)."""
    if wav.numel() == 0:
        return True
    peak = float(wav.detach().abs().max())
    return peak <= 10.0 ** (threshold_db / 20.0)


def write_audio(path: str | os.PathLike, wav: torch.Tensor, sample_rate: int, subtype: str | None = None) -> Path:
    """Write ``[samples]`` or ``[channels, samples]`` atomically (temporary file, then rename).

    The format follows the file name ending (``.wav``, ``.flac`` ...); ``subtype`` defaults to
    PCM_16 (e.g. ``"FLOAT"``, ``"PCM_24"``). Samples outside [-1, 1] are clipped for PCM.
    """
    p = Path(path)
    data = wav.detach().to("cpu", torch.float32)
    if data.dim() not in (1, 2):
        raise AudioError(f"{p}: expected a waveform of shape [samples] or [channels, samples], got {tuple(data.shape)}")
    check_waveform(data, f"waveform for {p}")
    arr = data.numpy().T if data.dim() == 2 else data.numpy()  # [S, C] or [S]
    subtype = subtype or "PCM_16"
    if subtype.startswith("PCM"):
        arr = np.clip(arr, -1.0, 1.0)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_file(p, suffix=f".tmp{p.suffix}")  # the user's umask, not mkstemp's 0600
    try:
        fmt = p.suffix.lstrip(".").upper() or None
        sf.write(tmp, arr, int(sample_rate), subtype=subtype, format=fmt)
        os.replace(tmp, p)
    except Exception as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, (sf.SoundFileError, ValueError, TypeError)):
            raise AudioError(f"{p}: cannot write audio ({exc})") from None
        raise
    return p


def find_audio_files(folder: str | os.PathLike) -> list[Path]:
    """Audio files (by name ending, see ``AUDIO_EXTENSIONS``) under ``folder``, recursively, sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise AudioError(f"{root}: not a folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def chunk_spans(length: int, chunk: int, align: int = 1) -> list[tuple[int, int]]:
    """Split ``[0, length)`` into consecutive spans of at most ``chunk`` samples.

    ``chunk`` is rounded down to a multiple of ``align`` (e.g. a model's samples per frame) so
    that every chunk but the last starts on a frame boundary. A final piece shorter than
    ``chunk / 4`` is merged into the previous span (it would yield too little context).
    """
    if length <= 0:
        return []
    step = max(align, (chunk // align) * align)
    if length <= step:
        return [(0, length)]
    spans = [(s, min(s + step, length)) for s in range(0, length, step)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < step // 4:
        last = spans.pop()
        spans[-1] = (spans[-1][0], last[1])
    return spans
