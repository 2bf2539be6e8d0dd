"""Plugin discovery and failure isolation, with entry points of real dist-info folders."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from diffuspeech.registry import Registry, RegistryError


def make_dist(site: Path, dist: str, version: str, modules: dict[str, str], entry_points: dict[str, str]) -> None:
    """Write modules plus a ``<dist>-<version>.dist-info`` with entry points: what pip installs."""
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    eps = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[diffuspeech]\n{eps}\n")


GOOD = """
from dataclasses import dataclass
import torch
from diffuspeech import MaskScheduler, hookimpl

class Half(MaskScheduler):
    @dataclass
    class Config:
        scale: float = 0.5  # multiplies t

    def mask_prob(self, t, modality="text"):
        return torch.as_tensor(t, dtype=torch.float32) * self.config.scale

@hookimpl
def register_schedulers(register):
    register("half", Half)
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("DIFFUSPEECH_DISABLE_PLUGINS", raising=False)
    return tmp_path


def test_builtins_registered_through_hooks():
    reg = Registry(load_entry_points=False)
    assert {"cosine", "linear", "per_modality"} <= set(reg.names("schedulers"))
    r = reg.registration("schedulers", "cosine")
    assert r.package == "diffuspeech" and r.plugin == "diffuspeech.plugins.schedulers"


def test_entry_point_plugin_is_discovered_with_its_package(site):
    make_dist(site, "ds-good", "1.2.3", {"ds_good": GOOD}, {"good": "ds_good"})
    reg = Registry()
    r = reg.registration("schedulers", "half")
    assert (r.package, r.version, r.plugin) == ("ds-good", "1.2.3", "good")
    assert reg.get("schedulers", "half")().mask_prob(1.0).item() == pytest.approx(0.5)


def test_failing_plugins_are_isolated_and_listed(site):
    make_dist(site, "ds-good", "1.0", {"ds_good": GOOD}, {"good": "ds_good"})
    make_dist(site, "ds-broken", "0.1", {"ds_broken": "raise RuntimeError('boom at import')"}, {"broken": "ds_broken"})
    make_dist(
        site,
        "ds-wrongkind",
        "0.2",
        {
            "ds_wrongkind": """
            from diffuspeech import hookimpl
            from diffuspeech.plugins.schedulers.cosine import CosineSchedule

            @hookimpl
            def register_vocoders(register):
                register("not_a_vocoder", CosineSchedule)
            """
        },
        {"wrongkind": "ds_wrongkind"},
    )
    make_dist(
        site,
        "ds-dupe",
        "0.3",
        {
            "ds_dupe": """
            from diffuspeech import hookimpl
            from diffuspeech.plugins.schedulers.linear import LinearSchedule

            @hookimpl
            def register_schedulers(register):
                register("cosine", LinearSchedule)
            """
        },
        {"dupe": "ds_dupe"},
    )
    reg = Registry()
    failures = {f.plugin: f for f in reg.failures if not f.plugin.startswith("diffuspeech.")}
    assert set(failures) == {"broken", "wrongkind", "dupe"}
    assert "boom at import" in failures["broken"].error and failures["broken"].package == "ds-broken"
    assert "must be a subclass of diffuspeech.Vocoder" in failures["wrongkind"].error
    assert failures["wrongkind"].version == "0.2"
    dup = failures["dupe"].error
    assert "duplicate schedulers name 'cosine'" in dup and "diffuspeech.plugins.schedulers" in dup and "dupe (ds-dupe 0.3)" in dup
    # the others keep working
    assert reg.get("schedulers", "half") is not None
    assert reg.get("schedulers", "linear") is not None
    assert "not_a_vocoder" not in reg.names("vocoders")
    # the duplicated name is an error naming both providers
    with pytest.raises(RegistryError, match=r"more than one plugin: diffuspeech\.plugins\.schedulers .* and dupe \(ds-dupe 0\.3\)"):
        reg.get("schedulers", "cosine")


def test_disable_env_var(site, monkeypatch):
    make_dist(site, "ds-good", "1.0", {"ds_good": GOOD}, {"good": "ds_good"})
    monkeypatch.setenv("DIFFUSPEECH_DISABLE_PLUGINS", "1")
    assert "half" not in Registry().names("schedulers")
    monkeypatch.setenv("DIFFUSPEECH_DISABLE_PLUGINS", "other,good")
    assert "half" not in Registry().names("schedulers")
    monkeypatch.setenv("DIFFUSPEECH_DISABLE_PLUGINS", "other")
    assert "half" in Registry().names("schedulers")


def test_in_test_plugin_object(fresh_registry):
    from dataclasses import dataclass

    import torch

    from diffuspeech import MaskScheduler, build_component, hookimpl

    class Zero(MaskScheduler):
        @dataclass
        class Config:
            pass

        def mask_prob(self, t, modality="text"):
            return torch.zeros_like(torch.as_tensor(t, dtype=torch.float32))

    class Plugin:
        @hookimpl
        def register_schedulers(self, register):
            register("zero", Zero)

    assert fresh_registry.add_plugin(Plugin(), name="in-test")
    assert build_component("schedulers", {"name": "zero"}).mask_prob(0.7).item() == 0.0


def test_abstract_class_is_rejected(fresh_registry):
    from diffuspeech import Vocoder, hookimpl

    class Half(Vocoder):  # decode() missing
        pass

    class Plugin:
        @hookimpl
        def register_vocoders(self, register):
            register("half", Half)

    assert not fresh_registry.add_plugin(Plugin(), name="abstract")
    assert "is abstract: implement decode" in fresh_registry.failures[-1].error


def test_plugins_command_lists_failures(site):
    make_dist(site, "ds-broken", "0.1", {"ds_broken": "import does_not_exist_anywhere"}, {"broken": "ds_broken"})
    env_path = str(site)
    out = subprocess.run(
        [sys.executable, "-m", "diffuspeech.cli", "plugins", "--json"],
        capture_output=True, text=True, env={**__import__("os").environ, "PYTHONPATH": env_path}, check=True,
    )
    data = json.loads(out.stdout)
    assert {"tokenizers", "backbones", "schedulers", "vocoders", "samplers", "attention", "failed"} <= set(data)
    assert any(s["name"] == "cosine" and s["package"] == "diffuspeech" for s in data["schedulers"])
    failed = {f["plugin"]: f for f in data["failed"]}
    assert "does_not_exist_anywhere" in failed["broken"]["error"]
