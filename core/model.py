"""A composed model: components built from one config, saved with provenance.

A saved model is a folder::

    config.yaml          the resolved config (asset paths relative to the folder)
    model.safetensors    weights of every nn.Module component, keys "<section>.<param>"
    provenance.json      per component: registered name, kind, providing package + version
    assets/              files the config points at (centroids, tokenizer.json, ...)

Path convention: a string setting named ``path`` or ``*_path`` (and ``vocab.text_tokenizer``)
that is relative is resolved against the config's folder (the model folder, or the YAML
file's folder), so configs and models can be moved as a whole.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .atomic import atomic_folder
from .component import component_default, component_fields
from .compose import COMPONENT_GROUPS, COMPONENT_SECTIONS, ConfigError, apply_overrides, build_component, component_nodes, load_config, validate_config
from .errors import ModelError
from .formats import TaskSpec, parse_tasks
from .registry import RegistryError, get_registry
from .vocab import Vocab, VocabConfig

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
PROVENANCE = "provenance.json"
ASSETS = "assets"


def _is_path_key(key: str) -> bool:
    return key == "path" or key.endswith("_path") or key == "text_tokenizer"


def _map_paths(node: Any, fn) -> Any:
    """Apply ``fn(value)`` to every path-like string setting in a plain container."""
    if isinstance(node, dict):
        return {k: (fn(v) if _is_path_key(str(k)) and isinstance(v, str) and v else _map_paths(v, fn)) for k, v in node.items()}
    if isinstance(node, list):
        return [_map_paths(v, fn) for v in node]
    return node


def resolve_paths(cfg: DictConfig, base_dir: str | Path | None) -> DictConfig:
    """Make relative path settings absolute against ``base_dir``."""
    if base_dir is None:
        return cfg
    base = Path(base_dir).resolve()
    data = OmegaConf.to_container(cfg, resolve=True)
    return OmegaConf.create(_map_paths(data, lambda v: v if os.path.isabs(v) else str(base / v)))


class SpeechDiffusionModel:
    """Tokenizer, backbone, scheduler, vocoder, sampler, attention, noiser + vocab + tasks."""

    def __init__(self, config: DictConfig | dict, base_dir: str | Path | None = None) -> None:
        cfg = config if isinstance(config, DictConfig) else OmegaConf.create(config)
        validate_config(cfg, base_dir=base_dir)
        self.config = resolve_paths(cfg, base_dir)
        self.vocab = Vocab(OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(VocabConfig), self.config.get("vocab", {}))))
        self.tasks: dict[str, TaskSpec] = parse_tasks(self.config.get("tasks"))
        self.components: dict[str, Any] = {}
        for section, kind in COMPONENT_SECTIONS.items():
            if section in self.config and self.config[section] is not None:
                self.components[section] = build_component(kind, self.config[section], section)
        for path, kind, node in component_nodes(self.config):
            section, _, name = path.partition(".")
            if section in COMPONENT_GROUPS:
                if section == "adapters":
                    from .speech_features import fill_adapter_sizes

                    node = fill_adapter_sizes(self, path, node)
                    self.config[section][name] = node
                self.components.setdefault(section, nn.ModuleDict())[name] = build_component(kind, node, path)
        check_compatible_components(self)

    @classmethod
    def from_config_file(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SpeechDiffusionModel:
        return cls(load_config(path, overrides), base_dir=Path(path).parent)

    def __getattr__(self, name: str) -> Any:
        if name in COMPONENT_SECTIONS or name in COMPONENT_GROUPS:
            return self.__dict__.get("components", {}).get(name)
        raise AttributeError(name)

    # ----------------------------------------------------------------- weights
    def modules(self) -> dict[str, nn.Module]:
        return {k: v for k, v in self.components.items() if isinstance(v, nn.Module)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for section, module in self.modules().items():
            for key, value in module.state_dict().items():
                out[f"{section}.{key}"] = value
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True, partial: bool = False) -> list[str]:
        """Load ``<section>.<param>`` weights (``<section>.<name>.<param>`` for group entries such as
        ``adapters.semantic``). ``partial`` (``train.init_from``): a component of the model with no
        weights in ``state`` keeps its fresh initialisation, weights of components the model does not
        have are ignored; the components both have must match exactly. Returns what ``partial`` left
        out (``"adapters.acoustic (fresh)"``, ``"adapters.acoustic (ignored)"``)."""
        modules = self.modules()

        def component(key: str) -> str:
            parts = key.split(".")
            return ".".join(parts[:2]) if parts[0] in COMPONENT_GROUPS else parts[0]

        own_components = {f"{s}.{n}" if s in COMPONENT_GROUPS else s for s, m in modules.items() for n in (m if s in COMPONENT_GROUPS else [None])}
        left_out: list[str] = []
        if partial:
            saved = {component(k) for k in state}
            left_out = [f"{c} (fresh)" for c in sorted(own_components - saved)] + [f"{c} (ignored)" for c in sorted(saved - own_components)]
            state = {k: v for k, v in state.items() if component(k) in own_components}
        grouped: dict[str, dict[str, torch.Tensor]] = {k: {} for k in modules}
        unexpected = []
        for key, value in state.items():
            section, _, rest = key.partition(".")
            if section in grouped:
                grouped[section][rest] = value
            else:
                unexpected.append(key)
        problems = []
        for section, module in modules.items():
            own = module.state_dict()
            for key, value in grouped[section].items():  # shapes first: torch raises on them even when not strict
                if key in own and tuple(own[key].shape) != tuple(value.shape):
                    problems.append(f"shape of {section}.{key}: saved {tuple(value.shape)}, composed {tuple(own[key].shape)}")
            if any(p.startswith(f"shape of {section}.") for p in problems):
                continue
            result = module.load_state_dict(grouped[section], strict=False)
            missing = [f"{section}.{k}" for k in result.missing_keys]
            if partial:
                missing = [k for k in missing if f"{component(k)} (fresh)" not in left_out]
            problems += [f"missing {k}" for k in missing]
            problems += [f"unexpected {section}.{k}" for k in result.unexpected_keys]
        problems += [f"unexpected {k} (no component {k.partition('.')[0]!r} in the config)" for k in unexpected]
        if strict and problems:
            more = f"; and {len(problems) - 8} more" if len(problems) > 8 else ""
            raise ModelError(
                f"the weights do not match the composed model ({len(problems)} problems): " + "; ".join(problems[:8]) + more
                + ". The config (with its overrides) describes another network than the one saved: keep the saved "
                "architecture (drop overrides of its shape), or train the new config"
            )
        return left_out

    # ----------------------------------------------------------------- provenance
    def provenance(self) -> dict[str, Any]:
        registry = get_registry()
        comps: dict[str, dict[str, str]] = {}

        def record(path: str, kind: str, node: Any) -> None:
            name = node if isinstance(node, str) else node["name"]
            reg = registry.registration(kind, str(name))
            comps[path] = {"kind": kind, "name": reg.name, "package": reg.package, "version": reg.version, "plugin": reg.plugin}
            for key, nested_kind in component_fields(reg.cls.Config).items():  # e.g. scheduler.speech
                child = node.get(key) if not isinstance(node, str) else None
                if child is None:
                    child = component_default(reg.cls.Config, key)
                if child is not None:
                    record(f"{path}.{key}", nested_kind, child)

        for path, kind, node in component_nodes(self.config):
            record(path, kind, node)
        return {
            "format": "diffuspeech-model/1",
            "diffuspeech_version": __version__,
            "torch_version": torch.__version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "components": comps,
        }

    def save(self, directory: str | Path, copy_assets: bool = True, extra: dict[str, Any] | None = None) -> Path:
        """Write the model folder atomically (a crash never leaves a half-written folder)."""
        directory = Path(directory)
        with atomic_folder(directory) as tmp:
            data = OmegaConf.to_container(self.config, resolve=True)
            if copy_assets:
                (tmp / ASSETS).mkdir()
                used: dict[str, str] = {}

                def copy(value: str) -> str:
                    src = Path(value)
                    if not src.exists():
                        return value
                    if value in used:
                        return used[value]
                    name = src.name
                    i = 1
                    while (tmp / ASSETS / name).exists():
                        name, i = f"{src.stem}_{i}{src.suffix}", i + 1
                    (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp / ASSETS / name)
                    used[value] = f"{ASSETS}/{name}"
                    return used[value]

                data = _map_paths(data, copy)
            OmegaConf.save(OmegaConf.create(data), tmp / CONFIG)
            state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS), metadata={"format": "diffuspeech-model/1"})
            prov = self.provenance()
            if extra:
                prov.update(extra)
            (tmp / PROVENANCE).write_text(json.dumps(prov, indent=2) + "\n")
        return directory

    @classmethod
    def load(
        cls,
        directory: str | Path,
        overrides: list[str] | tuple[str, ...] = (),
        allow_version_mismatch: bool = False,
        allow_external_paths: bool = False,  # trust a folder whose config points outside it (absolute or ../ paths)
    ) -> SpeechDiffusionModel:
        """Recompose a saved model from its provenance record and load its weights.

        A model folder is self-contained: a path in its ``config.yaml`` that is absolute or leaves the
        folder is refused (a folder received from someone else must not make the loader read other
        files), unless ``allow_external_paths``. Paths given as ``overrides`` are the caller's own."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ModelError(f"{directory}: no such model folder; pass a saved model folder or a registered model's name")
        for name in (CONFIG, PROVENANCE, WEIGHTS):
            if not (directory / name).is_file():
                raise ModelError(
                    f"{directory}: not a diffuspeech model folder (missing {name}); save one with SpeechDiffusionModel.save or `diffuspeech train`"
                )
        prov = read_provenance(directory / PROVENANCE)
        check_provenance(prov, allow_version_mismatch=allow_version_mismatch, where=str(directory))
        saved = load_config(directory / CONFIG)
        if not allow_external_paths:
            check_contained_paths(saved, directory)
        model = cls(apply_overrides(saved, list(overrides)), base_dir=directory)
        try:
            weights = load_file(str(directory / WEIGHTS))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for broken files
            raise ModelError(f"{directory / WEIGHTS}: not a readable safetensors file ({exc}); the file is truncated or not a model's weights") from None
        try:
            model.load_state_dict(weights)
        except ModelError as exc:
            raise ModelError(f"{directory}: {exc}") from None
        return model


def read_provenance(path: Path) -> dict[str, Any]:
    """``provenance.json``, checked: a broken record is a :class:`ModelError` naming the file, never a traceback."""
    try:
        prov = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a readable provenance record ({exc}); re-save the model or restore the file") from None
    comps = prov.get("components") if isinstance(prov, dict) else None
    if not isinstance(comps, dict):
        raise ModelError(f"{path}: no 'components' mapping; re-save the model or restore the file")
    for section, rec in comps.items():
        if not isinstance(rec, dict) or not all(isinstance(rec.get(k), str) for k in ("kind", "name", "package", "version")):
            raise ModelError(f"{path}: components.{section} needs string kind, name, package and version; got {rec!r}")
    return prov


def check_contained_paths(cfg: DictConfig, directory: Path) -> None:
    """Refuse path settings of a model folder's config that are absolute or resolve outside the folder."""
    root = directory.resolve()
    data = OmegaConf.to_container(cfg, resolve=True)

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                path = f"{where}.{key}" if where else str(key)
                if _is_path_key(str(key)) and isinstance(value, str) and value:
                    target = Path(value)
                    inside = not target.is_absolute() and (root / target).resolve().is_relative_to(root)
                    if not inside:
                        raise ModelError(
                            f"{directory / CONFIG}: {path}={value!r} points outside the model folder; a model folder must be "
                            "self-contained (copy the file into its assets/), or pass --allow-external-paths if you trust it"
                        )
                else:
                    walk(value, path)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}.{i}")

    walk(data, "")


def check_compatible_components(model: SpeechDiffusionModel) -> None:
    """Tokenizer, vocabulary and vocoder must agree on units and frame rate; raise ConfigError naming both sides."""
    from .speech_features import check_speech_features

    check_speech_features(model)
    vocab, tok, voc = model.vocab, model.tokenizer, model.vocoder
    if tok is not None and int(tok.num_units) > vocab.num_units:
        raise ConfigError(
            f"tokenizer produces {int(tok.num_units)} units but vocab.num_units is {vocab.num_units}: "
            f"set vocab.num_units={int(tok.num_units)} (and the backbone's vocabulary to match), or use a tokenizer with fewer units"
        )
    if voc is not None and int(voc.num_units) < vocab.num_units:
        raise ConfigError(
            f"vocoder {type(voc).__name__} decodes {int(voc.num_units)} units but the model's vocabulary has "
            f"vocab.num_units={vocab.num_units}: units >= {int(voc.num_units)} could not be voiced; use a vocoder "
            f"trained on this tokenizer's units (e.g. vocoder.num_units={vocab.num_units} for one that takes the setting)"
        )
    t_rate = getattr(tok, "frame_rate", None) if tok is not None else None
    v_rate = getattr(voc, "frame_rate", None) if voc is not None else None
    if t_rate and v_rate and not getattr(voc, "predicts_durations", False) and abs(float(t_rate) - float(v_rate)) > 1e-3 * float(t_rate):
        raise ConfigError(
            f"tokenizer makes {float(t_rate):g} units/s but vocoder {type(voc).__name__} expects {float(v_rate):g} units/s: "
            "the spoken answer would play at the wrong speed; pick a vocoder for this tokenizer's frame rate"
        )


def check_provenance(prov: dict[str, Any], allow_version_mismatch: bool = False, where: str = "model") -> None:
    """Every recorded component must be registered now, by the same package (and version)."""
    registry = get_registry()
    for section, rec in prov.get("components", {}).items():
        try:
            reg = registry.registration(rec["kind"], rec["name"])
        except RegistryError as exc:
            raise ConfigError(
                f"{where}: {section} was saved with {rec['kind']} {rec['name']!r} from {rec['package']} {rec['version']}, "
                f"which is not available now ({exc}). Install {rec['package']}=={rec['version']}."
            ) from None
        if reg.package != rec["package"]:
            raise ConfigError(
                f"{where}: {section} {rec['name']!r} was provided by {rec['package']} {rec['version']} when saved, "
                f"but now by {reg.package} {reg.version}"
            )
        if reg.version != rec["version"] and not allow_version_mismatch:
            raise ConfigError(
                f"{where}: {section} {rec['name']!r} was saved with {rec['package']} {rec['version']}, installed is "
                f"{reg.version}; install {rec['package']}=={rec['version']} or pass allow_version_mismatch=True "
                f"(--allow-version-mismatch)"
            )


# --------------------------------------------------------------------------- registered models
def registered_models() -> dict[str, tuple[Path, str, bool]]:
    """Models registered through ``register_models``: name -> (folder, description, is_default)."""
    return {
        r.name: (Path(r.cls), str(r.info.get("description", "")), bool(r.info.get("default", False)))
        for r in get_registry().registrations("models")
    }


def default_model_name() -> str:
    """The registered model that set ``default=True`` (exactly one must)."""
    defaults = [name for name, (_, _, default) in registered_models().items() if default]
    if len(defaults) != 1:
        found = ", ".join(defaults) if defaults else "none"
        raise ConfigError(
            f"--model is required: no single default model is registered (defaults: {found}); pass a saved model "
            f"folder or one of: {', '.join(registered_models()) or '(no registered models)'}"
        )
    return defaults[0]


def registered_model_dir(name: str) -> Path:
    """The folder of the registered model ``name``."""
    models = registered_models()
    if name not in models:
        raise ConfigError(f"no registered model {name!r}; registered models: {', '.join(models) or '(none)'}")
    folder = models[name][0]
    if not (folder / WEIGHTS).is_file():
        raise ConfigError(
            f"the registered model {name!r} is missing its weights ({folder / WEIGHTS}); reinstall the package "
            "that provides it (`diffuspeech plugins` names it), or pass a saved model folder with --model"
        )
    return folder


def resolve_model_dir(model: str | None) -> Path:
    """``--model``: a saved model folder, a registered model's name, or None (the default model)."""
    if not model:
        return registered_model_dir(default_model_name())
    if model in registered_models() and not Path(model).exists():
        return registered_model_dir(model)
    return Path(model)


def model_help() -> str:
    """The ``--model`` help of every command: what a model argument may be, registered models included."""
    models = registered_models()
    listed = ", ".join(f"{name} ({'the default; ' if default else ''}{what})" for name, (_, what, default) in models.items())
    return "saved model folder, or a registered model" + (f": {listed}" if listed else "")
