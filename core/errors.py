"""The errors a user can fix: each message names the problem and what to do.

The CLI prints them as one line (no traceback) and exits 2.
"""

from __future__ import annotations

__all__ = ["ConfigError", "MissingDependencyError", "ModelError", "UserError"]


class UserError(ValueError):
    """An expected failure with a message that says how to fix it."""


class ConfigError(UserError):
    """A config problem, with the full key path in the message."""


class MissingDependencyError(UserError):
    """An optional dependency (an extra such as ``diffuspeech[arith]``) is not installed."""


class ModelError(UserError):
    """A saved model folder or weights file that cannot be used as given (the message names the file)."""
