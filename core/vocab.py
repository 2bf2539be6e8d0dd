"""Unified vocabulary: text ids, special tokens, speech units at an offset, one mask id.

Layout (all ids in one space, one embedding table)::

    [0, text_size)                      text tokenizer ids
    [text_size, text_size + n_special)  special tokens (config order)
    [unit_offset, unit_offset + K)      speech units 0..K-1
    mask_id                             an id in one of the ranges above (or a special)

The DiffuSpeech-on-LLaDA layout is plain config (see ``configs/diffuspeech_llada8b.yaml``):
126,464 text ids (LLaDA's mask 126,336 and end-of-text 126,081 stay where they are),
9 specials at 126,464..126,472 and 500 units at 126,473..126,972: 126,973 ids.

Each modality may also produce its segment's end token while sampling; so that the
allowed set of a segment is one contiguous id range, the text end token must directly
follow the text range and the speech end token must directly precede the units
(``allowed_range``). The defaults satisfy this; a layout that doesn't is rejected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from .compose import CROSS_CHECKS, SECTION_SCHEMAS, ConfigError
from .modality import MODALITY_CODE, SPECIAL, SPEECH, TEXT


@dataclass
class VocabConfig:
    text_tokenizer: Optional[str] = None  # tokenizer.json file or a transformers tokenizer folder (local path)
    text_size: Optional[int] = None  # text ids [0, text_size); default: the tokenizer's vocabulary size
    specials: list[str] = field(
        default_factory=lambda: [
            "<eot>",  # end of a text segment (must directly follow the text ids)
            "<pad>",
            "<mask>",
            "<sot>",  # start of a text segment
            "<sos>",  # start of a speech segment
            "<|asr|>",
            "<|tts|>",
            "<|lm|>",
            "<|s2t|>",
            "<|t2t|>",
            "<|s2s|>",
            "<eos>",  # end of a speech segment (must directly precede the units)
        ]
    )
    num_units: int = 500  # speech units K
    unit_offset: Optional[int] = None  # first unit id; default text_size + len(specials)
    mask: str = "<mask>"  # mask token: a special's name, or an integer id given as a string ("126336")
    pad: str = "<pad>"  # padding token (name or id), never a loss target
    text_start: str = "<sot>"
    text_end: str = "<eot>"
    speech_start: str = "<sos>"
    speech_end: str = "<eos>"
    size: Optional[int] = None  # total ids; default unit_offset + num_units (may be larger, e.g. padded)


SECTION_SCHEMAS["vocab"] = VocabConfig


def check_vocab_layout(cfg: Any, base_dir: Path | None) -> None:
    """Build the vocabulary when it can be (text_size given, or its tokenizer file found): its layout checks
    (overlaps, reserved ids, the backbone's size) run at ``config validate`` too."""
    node = cfg.get("vocab") if hasattr(cfg, "get") else None
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
    tok = data.get("text_tokenizer")
    if tok:
        path = Path(tok) if Path(tok).is_absolute() or base_dir is None else Path(base_dir) / tok
        if not (path.is_file() or (path / "tokenizer.json").is_file()):
            data["text_tokenizer"] = None  # not here (yet): the model build names it; check the rest with text_size
    if data.get("text_tokenizer") is None and data.get("text_size") is None:
        return
    vocab = Vocab(OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(VocabConfig), data)), base_dir=base_dir)
    backbone = cfg.get("backbone") if hasattr(cfg, "get") else None
    if isinstance(backbone, (dict, DictConfig)) and not backbone.get("path"):
        rows = backbone.get("extend_vocab_to") or backbone.get("vocab_size")
        if isinstance(rows, int) and rows < vocab.size:
            raise ConfigError(
                f"backbone.vocab_size: {rows} embedding rows but the vocabulary has {vocab.size} ids; "
                f"set backbone.vocab_size={vocab.size} (or backbone.extend_vocab_to)"
            )


CROSS_CHECKS.append(check_vocab_layout)


def _load_text_tokenizer(path: str):
    """A ``tokenizers.Tokenizer`` from tokenizer.json, or a folder holding one."""
    from tokenizers import Tokenizer

    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise ConfigError(f"vocab.text_tokenizer: no tokenizer.json at {path!r} (give a tokenizer.json file or a folder holding one)")
    try:
        return Tokenizer.from_file(str(p))
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises a bare Exception for a bad file
        raise ConfigError(f"vocab.text_tokenizer: {p} is not a readable tokenizer.json ({exc})") from None


class Vocab:
    """Id arithmetic and text encoding for the unified vocabulary."""

    def __init__(self, config: VocabConfig | None = None, base_dir: str | Path | None = None) -> None:
        self.config = cfg = config or VocabConfig()
        self.tokenizer = None
        if cfg.text_tokenizer:
            path = Path(cfg.text_tokenizer)
            if base_dir is not None and not path.is_absolute():
                path = Path(base_dir) / path
            self.tokenizer = _load_text_tokenizer(str(path))
        if cfg.text_size is not None:
            self.text_size = int(cfg.text_size)
        elif self.tokenizer is not None:
            self.text_size = self.tokenizer.get_vocab_size()
        else:
            raise ConfigError("vocab: set vocab.text_tokenizer (a tokenizer.json) or vocab.text_size")
        if len(set(cfg.specials)) != len(cfg.specials):
            raise ConfigError(f"vocab.specials: duplicate names in {list(cfg.specials)}")
        self.special_ids = {name: self.text_size + i for i, name in enumerate(cfg.specials)}
        specials_end = self.text_size + len(cfg.specials)
        self.unit_offset = int(cfg.unit_offset) if cfg.unit_offset is not None else specials_end
        if self.unit_offset < specials_end:
            raise ConfigError(
                f"vocab.unit_offset: {self.unit_offset} overlaps text/special ids (they end at {specials_end}); "
                f"use at least {specials_end}"
            )
        self.num_units = int(cfg.num_units)
        if self.num_units <= 0:
            raise ConfigError(f"vocab.num_units: expected a positive integer, got {self.num_units}")
        self.size = int(cfg.size) if cfg.size is not None else self.unit_offset + self.num_units
        if self.size < self.unit_offset + self.num_units:
            raise ConfigError(f"vocab.size: {self.size} is smaller than unit_offset + num_units = {self.unit_offset + self.num_units}")
        self.mask_id = self.resolve("mask")
        self.pad_id = self.resolve("pad")
        self.text_start_id = self.resolve("text_start")
        self.text_end_id = self.resolve("text_end")
        self.speech_start_id = self.resolve("speech_start")
        self.speech_end_id = self.resolve("speech_end")
        for modality in (TEXT, SPEECH):
            self.allowed_range(modality)  # validates contiguity
        self._check_reserved_ids()

    def _check_reserved_ids(self) -> None:
        """The mask and pad ids must be distinct, never a speech unit, and (when the text tokenizer is known)
        never an ordinary text id: only one the tokenizer reserves as a special token."""
        lo, hi = self.unit_range
        if self.mask_id == self.pad_id:
            raise ConfigError(f"vocab.mask and vocab.pad are the same id ({self.mask_id}); give them different tokens")
        for key, idx in (("mask", self.mask_id), ("pad", self.pad_id)):
            if lo <= idx < hi:
                raise ConfigError(f"vocab.{key}: id {idx} is speech unit {idx - lo}; use a special token (e.g. vocab.{key}=<{key}>)")
            if idx < self.text_size and self.tokenizer is not None and not self._is_reserved_text_id(idx):
                raise ConfigError(
                    f"vocab.{key}: id {idx} is an ordinary text id; use a special token (vocab.{key}=<{key}>) or an id the "
                    "text tokenizer reserves as a special token (e.g. LLaDA's <|mdm_mask|> 126336)"
                )

    def _is_reserved_text_id(self, idx: int) -> bool:
        """Whether text id ``idx`` is a special (added) token of the text tokenizer."""
        if self.tokenizer is None:
            return False
        added = self.tokenizer.get_added_tokens_decoder() if hasattr(self.tokenizer, "get_added_tokens_decoder") else {}
        token = added.get(idx)
        return bool(token is not None and getattr(token, "special", False))

    # ------------------------------------------------------------------ ids
    def resolve(self, key: str) -> int:
        """The id of config field ``key`` (a special's name, or an integer id as text)."""
        value = str(getattr(self.config, key))
        if value in self.special_ids:
            return self.special_ids[value]
        if value.lstrip("-").isdigit():
            idx = int(value)
            if not 0 <= idx < self.size:
                raise ConfigError(f"vocab.{key}: id {idx} outside [0, {self.size})")
            return idx
        raise ConfigError(f"vocab.{key}: {value!r} is neither a special token ({', '.join(self.special_ids)}) nor an integer id")

    def special(self, name: str) -> int:
        try:
            return self.special_ids[name]
        except KeyError:
            raise KeyError(f"unknown special token {name!r}; vocab.specials: {', '.join(self.special_ids)}") from None

    @property
    def text_range(self) -> tuple[int, int]:
        return 0, self.text_size

    @property
    def unit_range(self) -> tuple[int, int]:
        return self.unit_offset, self.unit_offset + self.num_units

    def allowed_range(self, modality: str) -> tuple[int, int]:
        """Contiguous ``[lo, hi)`` a target segment of ``modality`` may produce, end token included."""
        if modality == TEXT:
            lo, hi = self.text_range
            if not lo <= self.text_end_id <= hi:
                raise ConfigError(
                    f"vocab.text_end: the text end token (id {self.text_end_id}) must be a text id or directly follow "
                    f"the text ids (id {hi}); put it first in vocab.specials"
                )
            return lo, max(hi, self.text_end_id + 1)
        if modality == SPEECH:
            lo, hi = self.unit_range
            if self.speech_end_id != lo - 1:
                raise ConfigError(
                    f"vocab.speech_end: the speech end token (id {self.speech_end_id}) must directly precede the "
                    f"units (id {lo}); put it last in vocab.specials or set vocab.unit_offset"
                )
            return lo - 1, hi
        raise ValueError(f"no allowed range for modality {modality!r}")

    def modality_map(self) -> torch.Tensor:
        """``[size]`` long: the modality code of every id (text, special or speech)."""
        out = torch.full((self.size,), MODALITY_CODE[SPECIAL], dtype=torch.long)
        out[: self.text_size] = MODALITY_CODE[TEXT]
        out[self.unit_offset : self.unit_offset + self.num_units] = MODALITY_CODE[SPEECH]
        for idx in self.special_ids.values():
            out[idx] = MODALITY_CODE[SPECIAL]
        return out

    # ------------------------------------------------------------------ text
    def encode_text(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise ConfigError("vocab.text_tokenizer is not set: cannot encode text")
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        bad = [i for i in ids if i >= self.text_size]
        if bad:
            raise ValueError(f"text tokenizer produced ids {bad[:5]} >= vocab.text_size {self.text_size}")
        return ids

    def decode_text(self, ids: list[int] | torch.Tensor) -> str:
        if self.tokenizer is None:
            raise ConfigError("vocab.text_tokenizer is not set: cannot decode text")
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        keep = [int(i) for i in ids if 0 <= int(i) < self.text_size and int(i) not in (self.mask_id, self.pad_id, self.text_end_id)]
        return self.tokenizer.decode(keep).strip()

    # ------------------------------------------------------------------ units
    def units_to_ids(self, units: torch.Tensor) -> torch.Tensor:
        units = torch.as_tensor(units, dtype=torch.long)
        if units.numel() and (units.min() < 0 or units.max() >= self.num_units):
            raise ValueError(
                f"speech units out of range: min {int(units.min())}, max {int(units.max())}; "
                f"the vocabulary has {self.num_units} units (vocab.num_units)"
            )
        return units + self.unit_offset

    def ids_to_units(self, ids: torch.Tensor) -> torch.Tensor:
        """Keep only unit ids (in order) and shift them back to [0, K)."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        lo, hi = self.unit_range
        keep = ids[(ids >= lo) & (ids < hi)]
        return keep - lo

    def describe(self) -> dict:
        return {
            "size": self.size,
            "text": list(self.text_range),
            "specials": self.special_ids,
            "units": list(self.unit_range),
            "mask_id": self.mask_id,
            "pad_id": self.pad_id,
        }

    def __repr__(self) -> str:
        return f"Vocab({json.dumps(self.describe())})"
