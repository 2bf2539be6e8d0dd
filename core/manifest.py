"""JSONL manifests: one JSON object per line, read the same way by every command and recipe.

    for line, row in read_manifest("train.jsonl"):   # row: a dict, or a BadRow saying what is wrong
        ...
    rows = read_rows("dev.jsonl")                     # all rows, or a ManifestError naming the first bad line

Relative paths inside rows are the caller's to resolve (against the manifest's folder).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union

from .errors import UserError

__all__ = ["BadRow", "ManifestError", "read_manifest", "read_rows"]


class ManifestError(UserError):
    """A manifest that cannot be read; the message names the file, the line and the fix."""


class BadRow(Exception):
    """One unusable row; ``reason`` is a short category (for skip reports), the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_manifest(path: str | os.PathLike, hint: str = "") -> Iterator[tuple[int, Union[dict[str, Any], BadRow]]]:
    """Yield ``(line number, row dict or BadRow)`` for every non-blank line.

    A missing file raises :class:`ManifestError` (``hint`` is appended: which setting names it)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}" + (f" ({hint})" if hint else ""))
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, BadRow("invalid_json", f"not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(row, dict):
                yield n, BadRow("invalid_json", f"expected a JSON object, got {type(row).__name__}")
                continue
            yield n, row


def read_rows(path: str | os.PathLike, hint: str = "") -> list[dict[str, Any]]:
    """Every row of a manifest; the first bad line raises :class:`ManifestError` naming it."""
    rows = []
    for n, row in read_manifest(path, hint):
        if isinstance(row, BadRow):
            raise ManifestError(f"{path}:{n}: {row}")
        rows.append(row)
    return rows
