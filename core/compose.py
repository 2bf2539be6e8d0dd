"""Composition: OmegaConf specs -> validated settings -> component objects.

A component node is ``{name: <registered name>, ...settings}``. Settings are checked
against the component's ``Config`` dataclass in OmegaConf struct mode. Every error names
the full key path and what would have been valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError
from .registry import RegistryError, get_registry, unknown_name_message

# top-level config key -> component kind
COMPONENT_SECTIONS: dict[str, str] = {
    "tokenizer": "tokenizers",
    "backbone": "backbones",
    "scheduler": "schedulers",
    "vocoder": "vocoders",
    "sampler": "samplers",
    "attention": "attention",
    "noiser": "noisers",
    "objective": "objectives",
}

# Plain (non-plugin) top-level sections and what validates each one: a dataclass, a
# function ``(node, path) -> Any`` raising ConfigError, or None (accepted as is).
# Modules that own a section add themselves here (e.g. ``vocab``, ``tasks``, ``train``).
SECTION_SCHEMAS: dict[str, Any] = {"meta": None}
SECTION_OWNERS = (
    "diffuspeech.vocab", "diffuspeech.formats", "diffuspeech.training.config", "diffuspeech.training.data", "diffuspeech.sampling.options",
)


def _import_section_owners() -> None:
    import importlib

    for module in SECTION_OWNERS:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def load_config(source: str | Path | dict | DictConfig, overrides: Sequence[str] = ()) -> DictConfig:
    """Load a YAML file (or take a mapping) and apply dotlist ``overrides`` (``a.b=c``)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            cfg = OmegaConf.load(path)
        except Exception as exc:  # noqa: BLE001 - yaml errors come in many types
            raise ConfigError(f"{path}: not a valid YAML config: {exc}") from None
    elif isinstance(source, DictConfig):
        cfg = source.copy()
    else:
        cfg = OmegaConf.create(source)
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{source}: the top level of a config must be a mapping")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Apply dotlist overrides in order; list items are addressed by index (``train.stages.0.lr=1e-3``)."""
    import yaml

    for item in overrides:
        key, _, raw = item.partition("=")
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        try:
            if key in COMPONENT_SECTIONS and isinstance(value, (str, dict)):
                # `vocoder=tone` / `vocoder={name: tone, ...}` replaces the node: the old settings go
                cfg[key] = {"name": value} if isinstance(value, str) else value
                continue
            OmegaConf.update(cfg, key, value, merge=True)
        except (OmegaConfBaseException, ValueError, IndexError, KeyError) as exc:
            raise ConfigError(f"override {item!r}: {str(exc).splitlines()[0]}") from None
        section, _, rest = key.partition(".")
        if rest == "name" and section in COMPONENT_SECTIONS:
            _drop_foreign_settings(cfg, section)
    return cfg


def _drop_foreign_settings(cfg: DictConfig, section: str) -> None:
    """After ``<section>.name=...``: drop the settings the newly named component does not have, with a warning."""
    import warnings

    node = cfg.get(section)
    if not isinstance(node, DictConfig):
        return
    try:
        cls = get_registry().get(COMPONENT_SECTIONS[section], str(node.get("name")))
    except RegistryError:
        return  # validation names the unknown component
    known = {f.name for f in dataclasses.fields(cls.Config)}
    foreign = [str(k) for k in node if str(k) != "name" and str(k) not in known]
    for k in foreign:
        del node[k]
    if foreign:
        warnings.warn(
            f"{section}.name={node.get('name')}: dropped {', '.join(f'{section}.{k}' for k in foreign)} "
            f"(not settings of the new {section})",
            stacklevel=3,
        )


def _type_name(tp: Any) -> str:
    if tp is Any:
        return "any"
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def validate_settings(schema: type, settings: dict[str, Any], path: str, what: str) -> Any:
    """Validate ``settings`` against dataclass ``schema``; return a ``schema`` instance."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    for key in settings:
        if key not in fields:
            valid = sorted(fields)
            msg = f"{path}.{key}: unknown key for {what}; valid keys: {', '.join(valid) or '(none)'}"
            close = difflib.get_close_matches(str(key), valid, n=1)
            if close:
                msg += f". Did you mean {close[0]!r}?"
            raise ConfigError(msg)
    base = OmegaConf.structured(schema)
    OmegaConf.set_struct(base, True)
    try:
        merged = OmegaConf.merge(base, settings)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = str(getattr(exc, "full_key", "") or getattr(exc, "key", "") or "")
        top = key.split(".")[0].split("[")[0]
        if top in hints and top in settings and "." not in key:
            given = settings[top]
            raise ConfigError(
                f"{path}.{key}: expected {_type_name(hints[top])}, got {given!r} ({type(given).__name__})"
            ) from None
        msg = getattr(exc, "msg", str(exc)).splitlines()[0]
        raise ConfigError(f"{path}.{key}: {msg}" if key else f"{path}: {msg}") from None
    return obj


def _as_dict(node: Any, path: str) -> dict[str, Any]:
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    if isinstance(node, dict):
        return dict(node)
    if isinstance(node, ListConfig):
        node = list(node)
    raise ConfigError(f"{path}: expected a mapping like {{name: ..., ...settings}}, got {node!r}")


def resolve_component(kind: str, node: Any, path: str) -> tuple[type, Any, str]:
    """Validate one component node; return ``(class, settings instance, name)``."""
    registry = get_registry()
    if isinstance(node, str):  # shorthand: `scheduler: cosine`
        node = {"name": node}
    data = _as_dict(node, path)
    if "name" not in data:
        raise ConfigError(
            f"{path}.name is missing: say which of the {kind} to use; registered {kind}: "
            f"{', '.join(registry.names(kind)) or '(none)'}"
        )
    name = data.pop("name")
    try:
        cls = registry.get(kind, str(name))
    except RegistryError as exc:
        if "more than one plugin" in str(exc):
            raise ConfigError(f"{path}.name: {exc}") from None
        raise ConfigError(unknown_name_message(kind, str(name), registry.names(kind), path=f"{path}.name")) from None
    settings = validate_settings(cls.Config, data, path, f"{kind} {name!r}")
    return cls, settings, str(name)


def build_component(kind: str, node: Any, path: str | None = None) -> Any:
    """Validate ``node`` and construct the component: ``Class(settings)``."""
    path = path or kind
    cls, settings, _ = resolve_component(kind, node, path)
    return cls(settings)


def validate_config(cfg: DictConfig | dict) -> None:
    """Check every section of a full config without building models. Raises ConfigError."""
    data = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    _import_section_owners()
    missing = sorted(OmegaConf.missing_keys(data))
    if missing:
        raise ConfigError(
            f"{missing[0]}: a required value is not set (??? in the config); set it in the file or with an override "
            f"like {missing[0]}=..." + (f" (also unset: {', '.join(missing[1:])})" if len(missing) > 1 else "")
        )
    valid = sorted(set(COMPONENT_SECTIONS) | set(SECTION_SCHEMAS))
    for key in data:
        key = str(key)
        if key in COMPONENT_SECTIONS:
            resolve_component(COMPONENT_SECTIONS[key], data[key], key)
            _validate_nested_components(COMPONENT_SECTIONS[key], data[key], key)
        elif key in SECTION_SCHEMAS:
            schema = SECTION_SCHEMAS[key]
            if isinstance(schema, type):
                validate_settings(schema, _as_dict(data[key], key), key, f"section {key!r}")
            elif callable(schema):
                schema(data[key], key)
        else:
            msg = f"{key}: unknown top-level key; valid keys: {', '.join(valid)}"
            close = difflib.get_close_matches(key, valid, n=1)
            if close:
                msg += f". Did you mean {close[0]!r}?"
            raise ConfigError(msg)


def _validate_nested_components(kind: str, node: Any, path: str) -> None:
    """Settings that are themselves component nodes of the same kind (e.g. per_modality)."""
    if isinstance(node, str):
        return
    for key, value in _as_dict(node, path).items():
        if isinstance(value, dict) and "name" in value:
            resolve_component(kind, value, f"{path}.{key}")
            _validate_nested_components(kind, value, f"{path}.{key}")
