"""The error every config problem raises (imported by contracts that validate settings)."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A config problem, with the full key path in the message."""
