"""Composition: OmegaConf specs -> validated settings -> component objects.

A component node is ``{name: <registered name>, ...settings}``. Settings are checked
against the component's ``Config`` dataclass in OmegaConf struct mode. Every error names
the full key path and what would have been valid.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .component import component_default, component_fields
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
    "encoder": "encoders",
}
# top-level config key -> component kind, for sections that map names of the user's choosing to
# component nodes (``adapters: {semantic: {name: semantic}, acoustic: {name: qformer}}``); a null
# entry is dropped (``adapters.acoustic=null``).
COMPONENT_GROUPS: dict[str, str] = {"adapters": "adapters"}


def component_nodes(cfg: Any) -> list[tuple[str, str, Any]]:
    """``(key path, kind, node)`` of every top-level component node of ``cfg``, group entries included
    (``("adapters.semantic", "adapters", {...})``), in config order; null nodes are left out."""
    out = []
    for section, kind in COMPONENT_SECTIONS.items():
        node = cfg.get(section) if hasattr(cfg, "get") else None
        if node is not None:
            out.append((section, kind, node))
    for section, kind in COMPONENT_GROUPS.items():
        group = cfg.get(section) if hasattr(cfg, "get") else None
        if group is None:
            continue
        if not isinstance(group, (dict, DictConfig)):
            raise ConfigError(f"{section}: expected a mapping of your names to {kind} nodes, e.g. {section}: {{semantic: {{name: ...}}}}; "
                              f"got {group!r}")
        for name, node in group.items():
            if node is not None:
                out.append((f"{section}.{name}", kind, node))
    return out

# Plain (non-plugin) top-level sections and what validates each one: a dataclass, a
# function ``(node, path) -> Any`` raising ConfigError, or None (accepted as is).
# Modules that own a section add themselves here (e.g. ``vocab``, ``tasks``, ``train``).
SECTION_SCHEMAS: dict[str, Any] = {"meta": None}
# Checks across sections ``(config, base_dir) -> None`` raising ConfigError (the vocabulary layout,
# task tokens against it, mixtures against the tasks, ...), run by validate_config after the sections.
CROSS_CHECKS: list[Any] = []
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
    """Apply dotlist overrides in order; list items are addressed by index (``train.stages.0.lr=1e-3``).

    Component nodes follow Hydra's rules: ``vocoder=tone`` or ``vocoder={name: tone, ...}`` replaces
    the node (the old component's settings go, the new one's defaults apply); ``vocoder.num_units=759``
    edits it; ``vocoder.name=tone`` alone keeps the settings the new component has and drops the rest,
    with a warning. The same holds for nested component nodes (``scheduler.speech=linear``)."""
    import yaml

    for item in overrides:
        key, _, raw = item.partition("=")
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} must look like key.path=value (no empty key between dots)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        if parts[0] == "tasks" and cfg.get("tasks") is None:
            from .formats import DEFAULT_TASKS  # formats -> compose: imported here

            cfg["tasks"] = copy.deepcopy(DEFAULT_TASKS)  # edit the default tasks, not a new list in their place
        try:
            if isinstance(value, (str, dict)) and component_kind_at(cfg, parts) is not None:
                node = {"name": value} if isinstance(value, str) else value
                OmegaConf.update(cfg, key, node, merge=False)  # replace the whole node
                continue
            OmegaConf.update(cfg, key, value, merge=True)
        except (OmegaConfBaseException, ValueError, IndexError, KeyError, TypeError) as exc:
            raise ConfigError(f"override {item!r}: {str(exc).splitlines()[0]} (list items are addressed by number: key.0.setting)") from None
        if parts[-1] == "name" and len(parts) > 1 and component_kind_at(cfg, parts[:-1]) is not None:
            _drop_foreign_settings(cfg, parts[:-1])
    return cfg


def component_kind_at(cfg: Any, parts: Sequence[str]) -> str | None:
    """The component kind of the node at key path ``parts`` (``["scheduler", "speech"]`` -> schedulers), or None."""
    if parts and parts[0] in COMPONENT_GROUPS:
        if len(parts) < 2:
            return None
        group = cfg.get(parts[0]) if hasattr(cfg, "get") else None
        kind, node = COMPONENT_GROUPS[parts[0]], group.get(parts[1]) if hasattr(group, "get") else None
        rest = parts[2:]
    elif parts and parts[0] in COMPONENT_SECTIONS:
        kind, node = COMPONENT_SECTIONS[parts[0]], cfg.get(parts[0]) if hasattr(cfg, "get") else None
        rest = parts[1:]
    else:
        return None
    for part in rest:
        name = node if isinstance(node, str) else (node.get("name") if hasattr(node, "get") else None)
        try:
            cls = get_registry().get(kind, str(name))
        except RegistryError:
            return None
        nested = component_fields(cls.Config)
        if part not in nested:
            return None
        kind = nested[part]
        node = node.get(part) if hasattr(node, "get") else None
        if node is None:
            node = component_default(cls.Config, part)
    return kind


def _drop_foreign_settings(cfg: DictConfig, parts: Sequence[str]) -> None:
    """After ``<node>.name=...``: drop the settings the newly named component does not have, with a warning."""
    import warnings

    path = ".".join(parts)
    node = OmegaConf.select(cfg, path)
    kind = component_kind_at(cfg, parts)
    if not isinstance(node, DictConfig) or kind is None:
        return
    try:
        cls = get_registry().get(kind, str(node.get("name")))
    except RegistryError:
        return  # validation names the unknown component
    known = {f.name for f in dataclasses.fields(cls.Config)}
    foreign = [str(k) for k in node if str(k) != "name" and str(k) not in known]
    for k in foreign:
        del node[k]
    if foreign:
        warnings.warn(
            f"{path}.name={node.get('name')}: dropped {', '.join(f'{path}.{k}' for k in foreign)} "
            f"(not settings of {kind} {node.get('name')!r})",
            ConfigWarning,
            stacklevel=3,
        )


class ConfigWarning(UserWarning):
    """A config change the composer made on its own (printed as one line by the CLI)."""


def checked_section(schema: type, check: Any, name: str) -> Any:
    """A :data:`SECTION_SCHEMAS` validator for section ``name``: keys and types against ``schema``, then
    ``check(settings)`` for the values (any :class:`~diffuspeech.errors.UserError` it raises becomes a
    ConfigError). The validator returns the settings instance."""
    from .errors import UserError

    def validate(node: Any, path: str = name) -> Any:
        data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
        settings = validate_settings(schema, data, path, f"section {path!r}")
        try:
            check(settings)
        except ConfigError:
            raise
        except UserError as exc:
            raise ConfigError(str(exc)) from None
        return settings

    validate.__doc__ = f"``{name}:`` checked as ``config validate`` and the commands see it: keys, types and values."
    return validate


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
    """Validate ``settings`` against dataclass ``schema``; return a ``schema`` instance.

    Settings declared with :func:`~diffuspeech.component.component_field` are component nodes:
    each is validated against its own component's ``Config`` (at ``<path>.<key>``)."""
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
    for key, value in settings.items():  # nested dataclasses and lists of them: their own paths (train.stages.0.steps)
        item_type, many = _dataclass_field_type(hints.get(key))
        if item_type is None:
            continue
        if many and isinstance(value, (list, tuple, ListConfig)):
            for i, item in enumerate(value):
                if isinstance(item, (dict, DictConfig)):
                    validate_settings(item_type, _as_dict(item, f"{path}.{key}.{i}"), f"{path}.{key}.{i}", f"{path}.{key} entries")
        elif not many and isinstance(value, (dict, DictConfig)):
            validate_settings(item_type, _as_dict(value, f"{path}.{key}"), f"{path}.{key}", f"{path}.{key}")
    nested = {}
    settings = dict(settings)
    for key, kind in component_fields(schema).items():
        if key in settings:
            node = settings.pop(key)
            node = {"name": node} if isinstance(node, str) else _as_dict(node, f"{path}.{key}")
            resolve_component(kind, node, f"{path}.{key}")
            nested[key] = node
    base = OmegaConf.structured(schema)
    OmegaConf.set_struct(base, True)
    for name, hint in hints.items():  # a dict-typed setting is an open mapping: its keys are the user's
        if name in fields and (hint is dict or typing.get_origin(hint) is dict) and isinstance(base.get(name), DictConfig):
            OmegaConf.set_struct(base[name], False)
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
    except (TypeError, ValueError) as exc:  # e.g. a mapping where a list belongs (an index override on a missing list)
        raise ConfigError(f"{path}: {str(exc).splitlines()[0]} (check the shape of the values under {path})") from None
    for key, node in nested.items():
        setattr(obj, key, node)
    return obj


def _dataclass_field_type(hint: Any) -> tuple[type | None, bool]:
    """``(dataclass, is_list)`` when a field holds a dataclass or a list of them, else ``(None, False)``."""
    if dataclasses.is_dataclass(hint):
        return hint, False
    if typing.get_origin(hint) in (list, typing.List):  # noqa: UP006
        args = typing.get_args(hint)
        if args and dataclasses.is_dataclass(args[0]):
            return args[0], True
    return None, False


def _as_dict(node: Any, path: str) -> dict[str, Any]:
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    if isinstance(node, dict):
        return dict(node)
    if isinstance(node, ListConfig):
        node = list(node)
    raise ConfigError(f"{path}: expected a mapping like {{name: ..., ...settings}}, got {node!r}")


def resolve_component(kind: str, node: Any, path: str, registry: Any = None) -> tuple[type, Any, str]:
    """Validate one component node; return ``(class, settings instance, name)``.

    ``registry``: where names are looked up (default: the process-wide one, ``get_registry()``)."""
    registry = registry if registry is not None else get_registry()
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
    check = getattr(cls, "check_config", None)
    if callable(check):  # value checks a component can make without being built (ranges, choices, shapes)
        try:
            check(settings, path)
        except ConfigError:
            raise
        except (ValueError, TypeError) as exc:
            message = str(exc)
            raise ConfigError(message if message.startswith(f"{path}.") or message.startswith(f"{path}:") else f"{path}: {message}") from None
    return cls, settings, str(name)


def build_component(kind: str, node: Any, path: str | None = None, registry: Any = None) -> Any:
    """Validate ``node`` and construct the component: ``Class(settings)``.

    ``registry``: a :class:`~diffuspeech.registry.Registry` to look the name up in (default: the
    process-wide one; ``with registry.activated():`` makes a registry process-wide for a block)."""
    path = path or {v: k for k, v in COMPONENT_SECTIONS.items()}.get(kind, kind)  # errors name the config key
    cls, settings, _ = resolve_component(kind, node, path, registry)
    return cls(settings)


def validate_config(cfg: DictConfig | dict, allow_missing: bool = False, base_dir: str | Path | None = None) -> list[str]:
    """Check every section of a full config without building models; raises ConfigError.

    ``allow_missing``: values left as ``???`` are checked as if unset (their defaults) instead of
    being an error. ``base_dir``: where relative paths (the text tokenizer) are read from, for the
    cross-section checks of :data:`CROSS_CHECKS`. Returns the missing key paths."""
    data = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    _import_section_owners()
    missing = sorted(OmegaConf.missing_keys(data))
    if missing and allow_missing:
        data = data.copy()
        for key in missing:
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(data, parent) if parent else data
            if isinstance(node, DictConfig) and leaf in node:
                del node[leaf]
    elif missing:
        raise ConfigError(
            f"{missing[0]}: a required value is not set (??? in the config); set it in the file or with an override "
            f"like {missing[0]}=..." + (f" (also unset: {', '.join(missing[1:])})" if len(missing) > 1 else "")
        )
    valid = sorted(set(COMPONENT_SECTIONS) | set(COMPONENT_GROUPS) | set(SECTION_SCHEMAS))
    for key in data:
        key = str(key)
        if key in COMPONENT_SECTIONS:
            if data[key] is not None:  # null: no such component (as if the key were absent)
                resolve_component(COMPONENT_SECTIONS[key], data[key], key)
        elif key in COMPONENT_GROUPS:
            for path, kind, node in component_nodes({key: data[key]}):
                resolve_component(kind, node, path)
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
    for check in CROSS_CHECKS:
        check(data, None if base_dir is None else Path(base_dir))
    return missing
