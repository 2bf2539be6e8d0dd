"""Argument-parsing helpers for commands (core's and plugins')."""

from __future__ import annotations

import argparse

__all__ = ["allow_intermixed"]


def allow_intermixed(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Let ``key=value`` overrides come after options (``tokenize m.jsonl --out d tokenizer.path=c``).

    Plain argparse stops filling a ``nargs="*"`` positional once an option has been seen; the
    intermixed parser (Python >= 3.7) collects positionals from anywhere on the line.
    """
    plain = parser.parse_known_args  # the intermixed parser calls it twice internally

    def parse_known_args(args=None, namespace=None):
        parser.parse_known_args = plain  # type: ignore[method-assign]
        try:
            return parser.parse_known_intermixed_args(args, namespace)
        finally:
            parser.parse_known_args = parse_known_args  # type: ignore[method-assign]

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]
    return parser
