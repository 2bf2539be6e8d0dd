"""The house rules, checked on the source: imports point down (recipes -> plugins -> core), core
never imports an implementation, and no plugin kind reaches into another's modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"core": "diffuspeech", "plugins": "diffuspeech.plugins", "recipes": "diffuspeech.recipes"}


def module_name(path: Path) -> str:
    top, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [PACKAGES[top], *rest]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            out += [(node.lineno, f"{target}.{alias.name}") for alias in node.names if alias.name != "*"]
    return out


def sources(top: str) -> list[Path]:
    return sorted(p for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts)


def _violations(top: str, rule) -> list[str]:
    found = []
    for path in sources(top):
        for line, target in imports_of(path):
            why = rule(path, target)
            if why:
                found.append(f"{path.relative_to(ROOT)}:{line}: imports {target} ({why})")
    return sorted(set(found))


def test_core_imports_no_implementation():
    def rule(path, target):
        if target.startswith(("diffuspeech.plugins", "diffuspeech.recipes")):
            return "core holds contracts and engines; implementations register through hooks"
        return None

    assert not _violations("core", rule)


def test_plugins_use_core_only_and_stay_in_their_kind():
    def rule(path, target):
        kind = path.relative_to(ROOT / "plugins").parts[0]
        if target.startswith("diffuspeech.recipes"):
            return "plugins never import recipes"
        if target.startswith("diffuspeech.plugins.") and not target.startswith(f"diffuspeech.plugins.{kind}"):
            return f"a {kind} plugin reaches into another kind's modules; move the shared helper into core's public API"
        return None

    assert not _violations("plugins", rule)


GLUE = {"__init__.py", "bench.py"}  # a kind folder's registration and bench may use all of its plugins


def test_no_plugin_imports_another_plugin():
    """Inside a kind folder, each module or sub-package is one plugin (llada/, hf_decoder.py, ...)."""

    def unit(rel: tuple[str, ...]) -> str:
        return rel[1].removesuffix(".py") if len(rel) > 1 else ""

    def rule(path, target):
        rel = path.relative_to(ROOT / "plugins").parts
        if len(rel) == 2 and rel[1] in GLUE:
            return None
        kind, own = rel[0], unit(rel)
        prefix = f"diffuspeech.plugins.{kind}."
        if target.startswith(prefix):
            other = target[len(prefix):].split(".")[0]
            if other and other != own:
                return f"plugin {kind}/{own} imports plugin {kind}/{other}; share through core's public API"
        return None

    assert not _violations("plugins", rule)


def test_recipes_reach_plugins_only_through_the_registry():
    def rule(path, target):
        if target.startswith("diffuspeech.plugins"):
            return "build components by name (build_component), never import a plugin's module"
        return None

    assert not _violations("recipes", rule)


@pytest.mark.parametrize("top", list(PACKAGES))
def test_every_package_folder_is_installed(top):
    """Every folder with Python files is listed in pyproject's packages (or `pip install .` drops it)."""
    import tomllib

    packages = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {module_name(p) for p in sources(top) if p.name == "__init__.py"}
    assert folders <= packages, f"add {sorted(folders - packages)} to [tool.setuptools] packages"
