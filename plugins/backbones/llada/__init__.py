"""The ``llada`` backbone: architecture (``arch``), layers, the network (``backbone``), the
official checkpoint format (``checkpoint``) and its bench."""

from .backbone import LLaDABackbone

__all__ = ["LLaDABackbone"]
