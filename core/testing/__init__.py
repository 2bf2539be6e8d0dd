"""The conformance kit: the rules every implementation of a kind must keep, for built-ins and
third-party plugins alike (see :mod:`diffuspeech.testing.conformance`)."""

from .conformance import CHECKS, ConformanceError, check_component

__all__ = ["CHECKS", "ConformanceError", "check_component"]
