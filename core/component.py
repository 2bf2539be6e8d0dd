"""What every pluggable component has in common: a settings dataclass.

A component class declares ``Config``, a dataclass whose fields (with defaults and
comments) are the settings a config node may carry next to ``name``. The composer
validates a node against it in OmegaConf struct mode and calls ``Class(config)``.

A setting that is itself a component node (``per_modality``'s ``text`` and ``speech``
schedules) is declared with :func:`component_field`: the composer validates it against that
component's own ``Config``, overrides reach every setting of it (``scheduler.speech.eps=...``),
and saved models record its provider like a top-level component's.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = ["Component", "NoSettings", "component_default", "component_field", "component_fields"]


@dataclass
class NoSettings:
    """Settings dataclass for components that take none."""


def component_field(kind: str, default: str | dict | None = None) -> Any:
    """A ``Config`` field holding a node of component ``kind`` (``{name: ..., ...settings}``, or a name)."""
    node = {"name": default} if isinstance(default, str) else default
    return field(default_factory=lambda: copy.deepcopy(node), metadata={"component": kind})


def component_fields(config_cls: Any) -> dict[str, str]:
    """``{field name: component kind}`` of the :func:`component_field` settings of a ``Config`` dataclass."""
    if not dataclasses.is_dataclass(config_cls):
        return {}
    return {f.name: f.metadata["component"] for f in dataclasses.fields(config_cls) if "component" in f.metadata}


def component_default(config_cls: Any, name: str) -> Any:
    """The default node of the :func:`component_field` setting ``name`` of a ``Config`` dataclass."""
    field_ = next(f for f in dataclasses.fields(config_cls) if f.name == name)
    return field_.default_factory() if field_.default_factory is not dataclasses.MISSING else field_.default


class Component:
    """Mixin for pluggable components. Subclasses override ``Config``."""

    Config: ClassVar[type] = NoSettings

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()

    @classmethod
    def check_config(cls, config: Any, path: str) -> None:
        """Value checks on validated settings that need nothing built (ranges, choices, shapes); raise
        ``ValueError`` or ``ConfigError`` naming ``<path>.<key>``. ``config validate`` runs them, and
        built-ins call them from ``__init__``. Default: none."""

    @classmethod
    def settings_fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls.Config)]
