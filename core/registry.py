"""Component registry built on pluggy.

Two families of kinds: *components* (a class subclassing the kind's contract, built from a
config node: tokenizers, backbones, ...) and *extensions* (``commands``, ``benches``, ``models``:
CLI sub-commands, benchmarks and registered model folders). Plugins are loaded one by one in a
fixed order (built-ins, then entry points of the ``diffuspeech`` group sorted by name). A plugin that fails to import, raises in a hook, or
registers a bad class is recorded as a failure and skipped as a whole; the rest keep
working. Set ``DIFFUSPEECH_DISABLE_PLUGINS=1`` (or ``all``) to load no third-party plugin,
or a comma-separated list of entry-point names to skip just those.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata as md
import inspect
import os
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, is_dataclass
from typing import Any, Optional

import pluggy

from . import hookspecs
from .adapter import Adapter
from .attention import AttentionPolicy
from .backbone import Backbone
from .encoder import SpeechEncoder
from .noiser import Noiser
from .objective import Objective
from .sampler import Sampler
from .scheduler import MaskScheduler
from .tokenizer import SpeechTokenizer
from .vocoder import Vocoder

__all__ = ["KINDS", "Kind", "Registry", "Registration", "PluginFailure", "RegistryError", "get_registry", "reset_registry", "resolve_ref"]

DISABLE_ENV = "DIFFUSPEECH_DISABLE_PLUGINS"


@dataclass(frozen=True)
class Kind:
    name: str  # plural, e.g. "tokenizers"
    hook: str  # hook name, e.g. "register_tokenizers"
    base: Optional[type] = None  # components: every registered class must subclass this
    check: Optional[Callable[[Kind, str, Any, dict], None]] = None  # extensions: validates (name, object, info)
    info_keys: tuple[str, ...] = ()  # extensions: keyword arguments register() accepts

    @property
    def is_component(self) -> bool:
        return self.base is not None


_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def _is_callable_ref(obj: Any) -> bool:
    """A callable, or a lazy ``"package.module:attribute"`` reference to one (imported on first use)."""
    return callable(obj) or (isinstance(obj, str) and bool(_REF.fullmatch(obj)))


def resolve_ref(obj: Any) -> Any:
    """The object a ``"package.module:attribute"`` reference names (anything else is returned as is)."""
    if not isinstance(obj, str):
        return obj
    module_name, _, attr = obj.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    return target


def _check_command(kind: Kind, name: Any, obj: Any, info: dict) -> None:
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*( [a-z0-9][a-z0-9_-]*)*", name):
        raise RegistryError(f"invalid command name {name!r}: lower-case words of letters, digits, '-' or '_', separated by one space")
    if not _is_callable_ref(obj):
        raise RegistryError(
            f"command {name!r}: register(name, configure) needs configure(parser) (a callable or 'module:function'), got {obj!r}"
        )


def _check_bench(kind: Kind, name: Any, obj: Any, info: dict) -> None:
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise RegistryError(f"invalid bench name {name!r}: letters, digits, '-' or '_'")
    if not _is_callable_ref(obj):
        raise RegistryError(f"bench {name!r}: register(name, run) needs run(args) -> dict (a callable or 'module:function'), got {obj!r}")
    if info.get("add_arguments") is not None and not _is_callable_ref(info["add_arguments"]):
        raise RegistryError(f"bench {name!r}: add_arguments must be a callable(parser) or 'module:function'")


def _check_model(kind: Kind, name: Any, obj: Any, info: dict) -> None:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise RegistryError(f"invalid model name {name!r}: letters, digits, '.', '-' or '_'")
    if not isinstance(obj, (str, os.PathLike)):
        raise RegistryError(f"model {name!r}: register(name, folder) needs a folder path, got {obj!r}")


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("tokenizers", "register_tokenizers", SpeechTokenizer),
        Kind("backbones", "register_backbones", Backbone),
        Kind("schedulers", "register_schedulers", MaskScheduler),
        Kind("vocoders", "register_vocoders", Vocoder),
        Kind("samplers", "register_samplers", Sampler),
        Kind("attention", "register_attention", AttentionPolicy),
        Kind("noisers", "register_noisers", Noiser),
        Kind("objectives", "register_objectives", Objective),
        Kind("encoders", "register_encoders", SpeechEncoder),
        Kind("adapters", "register_adapters", Adapter),
        Kind("commands", "register_commands", check=_check_command, info_keys=("help", "description")),
        Kind("benches", "register_benches", check=_check_bench, info_keys=("help", "add_arguments")),
        Kind("models", "register_models", check=_check_model, info_keys=("description", "default")),
    )
}
COMPONENT_KINDS = tuple(k for k, v in KINDS.items() if v.is_component)

# The built-in plugins: core's own commands and benches, one module per component kind, the recipes.
BUILTIN_MODULES = [
    "diffuspeech.commands",
    "diffuspeech.bench",
    *(f"diffuspeech.plugins.{kind}" for kind in COMPONENT_KINDS),
    "diffuspeech.recipes.arith",
]


class RegistryError(LookupError):
    """Unknown or ambiguous component name, or a bad registration."""


@dataclass(frozen=True)
class Registration:
    kind: str
    name: str
    cls: Any  # components: the class; extensions: the registered object (configure, run, folder)
    plugin: str  # plugin (entry point / module) name
    package: str  # distribution that provides it
    version: str
    info: dict = field(default_factory=dict, compare=False, hash=False)  # extensions: register()'s keyword arguments

    def as_dict(self) -> dict[str, str]:
        obj = self.cls
        if isinstance(obj, (str, os.PathLike)):
            what = str(obj)  # a folder, or a lazy 'module:attribute' reference
        else:
            what = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"
        return {
            "kind": self.kind,
            "name": self.name,
            "class": what,
            "plugin": self.plugin,
            "package": self.package,
            "version": self.version,
        }


@dataclass(frozen=True)
class PluginFailure:
    plugin: str
    package: str
    version: str
    error: str

    def as_dict(self) -> dict[str, str]:
        return {"plugin": self.plugin, "package": self.package, "version": self.version, "error": self.error}


def _diffuspeech_version() -> str:
    try:
        return md.version("diffuspeech")
    except md.PackageNotFoundError:
        return "0+unknown"


def _distribution_of(obj: Any) -> tuple[str, str]:
    """Best-effort (package, version) for a module or object not loaded via an entry point."""
    module = obj if inspect.ismodule(obj) else inspect.getmodule(obj)
    top = (getattr(module, "__name__", "") or "").split(".")[0]
    if top == "diffuspeech":
        return "diffuspeech", _diffuspeech_version()
    dists = md.packages_distributions().get(top, [])
    if dists:
        try:
            return dists[0], md.version(dists[0])
        except md.PackageNotFoundError:
            pass
    return "<local>", ""


def _validate_class(kind: Kind, name: Any, cls: Any, info: dict | None = None) -> None:
    info = info or {}
    if not kind.is_component:
        unknown = sorted(set(info) - set(kind.info_keys))
        if unknown:
            raise RegistryError(f"{kind.name} {name!r}: unknown register() keyword(s) {unknown}; valid: {', '.join(kind.info_keys)}")
        kind.check(kind, name, cls, info)
        return
    if info:
        raise RegistryError(f"{kind.name} {name!r}: register(name, cls) takes no keywords, got {sorted(info)}")
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise RegistryError(f"invalid {kind.name} name {name!r}: use letters, digits, '_' or '-'")
    if not (inspect.isclass(cls) and issubclass(cls, kind.base)):
        raise RegistryError(
            f"{kind.name} {name!r} must be a subclass of diffuspeech.{kind.base.__name__}, got {cls!r}"
        )
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise RegistryError(f"{kind.name} {name!r} ({cls.__qualname__}) is abstract: implement {missing}")
    config_cls = getattr(cls, "Config", None)
    if not (inspect.isclass(config_cls) and is_dataclass(config_cls)):
        raise RegistryError(f"{kind.name} {name!r}: {cls.__qualname__}.Config must be a dataclass")


@dataclass
class Registry:
    """All registered components, by kind and name, with their providers."""

    load_entry_points: bool = True
    builtins: bool = True
    _components: dict[str, dict[str, Registration]] = field(default_factory=lambda: {k: {} for k in KINDS})
    _conflicts: dict[tuple[str, str], list[Registration]] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    plugin_manager: pluggy.PluginManager = field(default_factory=lambda: pluggy.PluginManager(hookspecs.PROJECT_NAME))

    def __post_init__(self) -> None:
        self.plugin_manager.add_hookspecs(hookspecs)
        if self.builtins:
            for module_name in BUILTIN_MODULES:
                module = importlib.import_module(module_name)
                self.add_plugin(module, name=module_name, package="diffuspeech", version=_diffuspeech_version())
        if self.load_entry_points:
            self._load_entry_points()

    # ----------------------------------------------------------------- loading
    def _load_entry_points(self) -> None:
        disabled = os.environ.get(DISABLE_ENV, "").strip()
        if disabled.lower() in {"1", "all", "true", "yes"}:
            return
        skip = {s.strip() for s in disabled.split(",") if s.strip()}
        eps = sorted(md.entry_points(group=hookspecs.PROJECT_NAME), key=lambda ep: ep.name)
        for ep in eps:
            if ep.name in skip:
                continue
            package = ep.dist.name if ep.dist is not None else "<unknown>"
            version = ep.dist.version if ep.dist is not None else ""
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - isolate every plugin
                self.failures.append(
                    PluginFailure(ep.name, package, version, f"import failed: {type(exc).__name__}: {exc}")
                )
                continue
            self.add_plugin(module, name=ep.name, package=package, version=version)

    def add_plugin(self, plugin: Any, name: str | None = None, package: str | None = None, version: str | None = None) -> bool:
        """Register a plugin object (module or instance with ``@hookimpl`` functions).

        Returns True on success; on failure the plugin is skipped, recorded in ``failures``
        and False is returned. Used for built-ins, entry points and in-test plugins alike.
        """
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
        if package is None or version is None:
            package, version = _distribution_of(plugin)
        try:
            self.plugin_manager.register(plugin, name=name)
        except Exception as exc:  # noqa: BLE001
            self.failures.append(PluginFailure(name, package, version, f"invalid plugin: {type(exc).__name__}: {exc}"))
            return False

        staged: list[Registration] = []
        try:
            for kind in KINDS.values():
                for impl in getattr(self.plugin_manager.hook, kind.hook).get_hookimpls():
                    if impl.plugin_name != name:
                        continue

                    def register(comp_name: str, cls: Any, _kind: Kind = kind, **info: Any) -> None:
                        _validate_class(_kind, comp_name, cls, info)
                        staged.append(Registration(_kind.name, comp_name, cls, name, package, version, dict(info)))

                    impl.function(register=register)
            seen: set[tuple[str, str]] = set()
            for reg in staged:
                if (reg.kind, reg.name) in seen:
                    raise RegistryError(f"registers {reg.kind} {reg.name!r} twice")
                seen.add((reg.kind, reg.name))
        except Exception as exc:  # noqa: BLE001
            self.plugin_manager.unregister(name=name)
            detail = str(exc) if isinstance(exc, RegistryError) else f"{type(exc).__name__}: {exc}"
            tb = traceback.extract_tb(exc.__traceback__)
            where = f" ({tb[-1].filename}:{tb[-1].lineno})" if tb and not isinstance(exc, RegistryError) else ""
            self.failures.append(PluginFailure(name, package, version, detail + where))
            return False

        ok = True
        for reg in staged:
            existing = self._components[reg.kind].get(reg.name)
            if existing is not None or (reg.kind, reg.name) in self._conflicts:
                first = existing or self._conflicts[(reg.kind, reg.name)][0]
                self._conflicts.setdefault((reg.kind, reg.name), [first]).append(reg)
                self._components[reg.kind].pop(reg.name, None)
                self.failures.append(
                    PluginFailure(
                        name,
                        package,
                        version,
                        f"duplicate {reg.kind} name {reg.name!r}: provided by {first.plugin} "
                        f"({first.package} {first.version}) and by {reg.plugin} ({reg.package} {reg.version})",
                    )
                )
                ok = False
                continue
            self._components[reg.kind][reg.name] = reg
        return ok

    # ----------------------------------------------------------------- lookup
    def names(self, kind: str) -> list[str]:
        self._check_kind(kind)
        return sorted(self._components[kind])

    def registrations(self, kind: str | None = None) -> list[Registration]:
        kinds = [kind] if kind else list(KINDS)
        return [self._components[k][n] for k in kinds for n in sorted(self._components[k])]

    def registration(self, kind: str, name: str) -> Registration:
        self._check_kind(kind)
        if (kind, name) in self._conflicts:
            providers = " and ".join(f"{r.plugin} ({r.package} {r.version})" for r in self._conflicts[(kind, name)])
            raise RegistryError(
                f"{kind} name {name!r} is provided by more than one plugin: {providers}; "
                f"uninstall one or disable it with {DISABLE_ENV}=<entry-point name>"
            )
        try:
            return self._components[kind][name]
        except KeyError:
            raise RegistryError(unknown_name_message(kind, name, self.names(kind))) from None

    def get(self, kind: str, name: str) -> type:
        return self.registration(kind, name).cls

    def _check_kind(self, kind: str) -> None:
        if kind not in KINDS:
            raise RegistryError(f"unknown component kind {kind!r}; valid kinds: {', '.join(KINDS)}")


    @contextlib.contextmanager
    def activated(self):
        """Make this registry the process-wide one for a ``with`` block (tests, embedding apps)."""
        previous = reset_registry(self)
        try:
            yield self
        finally:
            reset_registry(previous)

    def get_info(self, kind: str, name: str) -> dict:
        """register()'s keyword arguments for an extension (e.g. a command's help)."""
        return dict(self.registration(kind, name).info)


def unknown_name_message(kind: str, name: str, valid: list[str], path: str | None = None) -> str:
    where = f"{path}: " if path else ""
    singular = kind[:-1] if kind.endswith("s") else kind
    msg = f"{where}unknown {singular} name {name!r}; registered {kind}: {', '.join(valid) or '(none)'}"
    close = difflib.get_close_matches(str(name), valid, n=1)
    if close:
        msg += f". Did you mean {close[0]!r}?"
    return msg


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry (built on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry()
    return _REGISTRY


def reset_registry(registry: Registry | None = None) -> Registry | None:
    """Replace the process-wide registry (tests use this); returns the previous one."""
    global _REGISTRY
    previous, _REGISTRY = _REGISTRY, registry
    return previous
