"""What every pluggable component has in common: a settings dataclass.

A component class declares ``Config``, a dataclass whose fields (with defaults and
comments) are the settings a config node may carry next to ``name``. The composer
validates a node against it in OmegaConf struct mode and calls ``Class(config)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass
class NoSettings:
    """Settings dataclass for components that take none."""


class Component:
    """Mixin for pluggable components. Subclasses override ``Config``."""

    Config: ClassVar[type] = NoSettings

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()

    @classmethod
    def settings_fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls.Config)]
