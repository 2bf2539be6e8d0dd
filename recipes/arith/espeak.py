"""Offline speech synthesis with espeak-ng, shipped by the ``espeakng-loader`` package.

``espeakng-loader`` installs ``libespeak-ng`` and its ``espeak-ng-data`` folder (languages,
voices and the ``!v`` voice variants) inside the Python environment, so no system package
is needed. This module drives the library through :mod:`ctypes` in synchronous mode: the
audio comes back through a callback into a per-call buffer, and a process-wide lock keeps
the library's global state (current voice, rate, pitch) consistent across threads.

Example::

    from diffuspeech.recipes.arith.espeak import get_espeak

    tts = get_espeak()
    wav, sr = tts.synthesize("what is two plus three", voice="en-us+m3", speed=160, pitch=40)
    # wav: float32 [samples] in [-1, 1]; sr: 22050

A voice is named ``LANGUAGE[+VARIANT]`` as on the espeak-ng command line, e.g. ``en-us``,
``en-gb-scotland+f4``; :meth:`Espeak.voices` and :meth:`Espeak.variants` list what is
installed.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffuspeech.errors import UserError

INSTALL_HINT = "pip install espeakng-loader"

# espeak_AUDIO_OUTPUT / options / flags / parameters (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit() on missing data
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000  # add the sentence-final pause (what the espeak-ng CLI does)
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_EE_OK = 0

SPEED_RANGE = (80, 450)  # words per minute accepted by espeak-ng
PITCH_RANGE = (0, 100)  # espeak-ng base pitch scale, 50 = the voice's normal pitch


class EspeakError(UserError, RuntimeError):
    """espeak-ng is missing, its data is incomplete, or a request is invalid."""


@dataclass(frozen=True)
class Voice:
    """A base (language) voice, e.g. ``en-us``."""

    name: str  # human-readable, e.g. "English (America)"
    language: str  # the name to pass as voice, e.g. "en-us"
    identifier: str  # file below espeak-ng-data/voices, e.g. "gmw/en-US"
    gender: str  # "male", "female" or "none"


@dataclass(frozen=True)
class Variant:
    """A voice variant from ``espeak-ng-data/voices/!v``, appended to a voice as ``+id``."""

    id: str  # file name, used in voice names: "en-us+<id>", e.g. "f2"
    name: str  # the variant's own ``name`` line, e.g. "female2"
    gender: str  # "male", "female" or "none"


class _VoiceStruct(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),  # priority byte + language, repeated, "" terminated
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_GENDERS = {0: "none", 1: "male", 2: "female"}


def locate_espeak(library_path: str | os.PathLike | None = None, data_path: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Find ``libespeak-ng`` and the ``espeak-ng-data`` folder; raise :class:`EspeakError` if absent.

    Defaults come from the ``espeakng-loader`` package. ``data_path`` is the
    ``espeak-ng-data`` folder itself.
    """
    if library_path is None or data_path is None:
        try:
            import espeakng_loader
        except ImportError as exc:
            raise EspeakError(
                "espeak-ng is not available: the Python package 'espeakng-loader' (which ships "
                f"libespeak-ng and its voices) is not installed. Install it with `{INSTALL_HINT}`."
            ) from exc
        pkg_dir = Path(espeakng_loader.__file__).parent
        library_path = library_path if library_path is not None else espeakng_loader.get_library_path()
        data_path = data_path if data_path is not None else pkg_dir / "espeak-ng-data"
    lib, data = Path(library_path), Path(data_path)
    if not lib.is_file():
        raise EspeakError(f"espeak-ng library not found at {lib}. Reinstall it with `{INSTALL_HINT}`.")
    missing = [p for p in ("phontab", "phondata", "voices/!v", "lang") if not (data / p).exists()]
    if missing:
        raise EspeakError(
            f"espeak-ng voice data is missing or incomplete at {data} (no {', '.join(missing)}). "
            f"Reinstall the voices with `{INSTALL_HINT}`."
        )
    return lib, data


class Espeak:
    """One loaded espeak-ng library. Use :func:`get_espeak` (the library has global state)."""

    def __init__(self, library_path: str | os.PathLike | None = None, data_path: str | os.PathLike | None = None) -> None:
        lib_path, data = locate_espeak(library_path, data_path)
        self.library_path, self.data_path = lib_path, data
        self._lib = lib = ctypes.CDLL(str(lib_path))
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_VoiceStruct))
        lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_VoiceStruct)]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        self._set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_seed is not None:
            self._set_seed.restype = None
            self._set_seed.argtypes = [ctypes.c_long]

        # espeak_Initialize takes the folder that *contains* espeak-ng-data.
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data.parent).encode(), _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EspeakError(f"espeak-ng failed to initialise with data at {data}. Reinstall it with `{INSTALL_HINT}`.")
        self.sample_rate: int = rate
        self._chunks: list[np.ndarray] = []
        self._callback = _SynthCallback(self._on_audio)  # keep a reference: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()
        self._voices: list[Voice] | None = None
        self._variants: list[Variant] | None = None

    def _on_audio(self, wav, n: int, events) -> int:
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = continue

    def _list(self, spec: _VoiceStruct | None) -> list[_VoiceStruct]:
        with self._lock:
            arr = self._lib.espeak_ListVoices(ctypes.byref(spec) if spec is not None else None)
            out, i = [], 0
            while arr[i]:
                v = arr[i].contents
                out.append((v.name.decode(), v.languages, v.identifier.decode(), v.gender))
                i += 1
        return out

    def voices(self) -> list[Voice]:
        """Every base voice (one per language), sorted by language."""
        if self._voices is not None:
            return list(self._voices)
        out = []
        for name, languages, identifier, gender in self._list(None):
            language = languages[1:].split(b"\0", 1)[0].decode()  # skip the priority byte
            out.append(Voice(name=name, language=language, identifier=identifier, gender=_GENDERS.get(gender, "none")))
        self._voices = sorted(out, key=lambda v: v.language)
        return list(self._voices)

    def variants(self) -> list[Variant]:
        """Every voice variant in ``espeak-ng-data/voices/!v``, sorted by id (case-insensitive)."""
        if self._variants is not None:
            return list(self._variants)
        spec = _VoiceStruct()
        spec.languages = b"variant"
        out = []
        for name, _, identifier, gender in self._list(spec):
            if not identifier.startswith("!v/"):
                continue
            out.append(Variant(id=identifier[len("!v/"):], name=name, gender=_GENDERS.get(gender, "none")))
        self._variants = sorted(out, key=lambda v: v.id.lower())
        return list(self._variants)

    def check_voice(self, voice: str) -> str:
        """Validate ``LANGUAGE[+VARIANT]`` (case-insensitive) and return it in canonical spelling.

        espeak-ng silently falls back to its default for an unknown variant, so it is checked
        here against :meth:`voices` and :meth:`variants`.
        """
        language, _, variant = voice.partition("+")
        languages = {v.language.lower(): v.language for v in self.voices()}
        canonical = languages.get(language.lower())
        if canonical is None:
            close = sorted(lang for lang in languages.values() if lang.split("-")[0] == language.lower().split("-")[0])
            hint = f" (similar: {', '.join(close)})" if close else " (see Espeak.voices(), e.g. 'en-us')"
            raise EspeakError(f"espeak-ng has no language voice {language!r} in {voice!r}{hint}")
        if not variant:
            return canonical
        variants = {v.id.lower(): v.id for v in self.variants()}
        if variant.lower() not in variants:
            raise EspeakError(
                f"espeak-ng has no voice variant {variant!r} in {voice!r}; installed variants: "
                f"{', '.join(sorted(variants.values(), key=str.lower))}"
            )
        return f"{canonical}+{variants[variant.lower()]}"

    def synthesize(
        self,
        text: str,
        voice: str = "en-us",
        speed: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        seed: int = 0,
    ) -> tuple[np.ndarray, int]:
        """Speak ``text`` -> (float32 waveform ``[samples]`` in [-1, 1], sample rate).

        speed: words per minute (80..450); pitch: base pitch 0..100 (50 = the voice's own);
        pitch_range: intonation range 0..100 (0 = monotone); seed: the library's noise seed
        (breathy variants add random aspiration).

        Determinism: the library also keeps internal state across calls (pitch flutter, echo
        buffer), so audio can differ by a few samples with the history of earlier calls. A fresh
        process replaying the same calls gives byte-identical audio; the arith recipe relies on
        that (one fresh worker process per chunk).
        """
        lo, hi = SPEED_RANGE
        if not lo <= int(speed) <= hi:
            raise EspeakError(f"espeak-ng speed must be {lo}..{hi} words per minute, got {speed}")
        for label, value in (("pitch", pitch), ("pitch_range", pitch_range)):
            if not PITCH_RANGE[0] <= int(value) <= PITCH_RANGE[1]:
                raise EspeakError(f"espeak-ng {label} must be {PITCH_RANGE[0]}..{PITCH_RANGE[1]}, got {value}")
        data = text.encode("utf-8")
        voice = self.check_voice(voice)
        language, _, variant = voice.partition("+")
        # The library looks voices up by name or file name; "en-gb" is only a language code
        # (its file is "gmw/en"), so pass the file name of the language voice.
        file_name = next(v.identifier for v in self.voices() if v.language == language).rsplit("/", 1)[-1]
        spec = f"{file_name}+{variant}" if variant else file_name
        with self._lock:
            if self._lib.espeak_SetVoiceByName(spec.encode("utf-8")) != _EE_OK:
                raise EspeakError(
                    f"espeak-ng has no voice {voice!r}: use LANGUAGE[+VARIANT] with a language from "
                    "Espeak.voices() (e.g. 'en-us') and a variant id from Espeak.variants() (e.g. 'f2')"
                )
            for param, value in ((_PARAM_RATE, speed), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range), (_PARAM_VOLUME, 100)):
                self._lib.espeak_SetParameter(param, int(value), 0)
            if self._set_seed is not None:
                self._set_seed(int(seed))
            self._chunks = []
            err = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
            chunks, self._chunks = self._chunks, []
        if err != _EE_OK:
            raise EspeakError(f"espeak-ng failed to synthesise {text!r} with voice {voice!r} (error {err})")
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)  # [samples] int16
        return pcm.astype(np.float32) / 32768.0, self.sample_rate


_ENGINE: Espeak | None = None
_ENGINE_LOCK = threading.Lock()


def get_espeak() -> Espeak:
    """The process-wide :class:`Espeak` (loaded on first use from ``espeakng-loader``)."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = Espeak()
        return _ENGINE


def synthesize(text: str, voice: str = "en-us", speed: int = 175, pitch: int = 50, **kwargs) -> tuple[np.ndarray, int]:
    """Shorthand for ``get_espeak().synthesize(...)``."""
    return get_espeak().synthesize(text, voice=voice, speed=speed, pitch=pitch, **kwargs)
