"""A real plugin package (tests/plugin_pkg, its own pyproject + entry point) installed with pip."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).parent / "plugin_pkg"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(PKG)],
        check=True, capture_output=True,
    )
    return {**os.environ, "PYTHONPATH": str(target), "DIFFUSPEECH_DISABLE_PLUGINS": ""}


def run_cli(env, *args):
    return subprocess.run([sys.executable, "-m", "diffuspeech.cli", *args], capture_output=True, text=True, env=env)


def test_installed_package_is_listed(installed):
    out = run_cli(installed, "plugins", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    step = [s for s in data["schedulers"] if s["name"] == "step"]
    assert step and step[0]["package"] == "diffuspeech-plugin-example" and step[0]["version"] == "0.3.1"
    assert any(v["name"] == "sine" for v in data["vocoders"])
    assert not [f for f in data["failed"] if f["package"] == "diffuspeech-plugin-example"]


def test_config_naming_the_plugin_uses_it(installed, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("scheduler:\n  name: step\n  threshold: 0.25\nvocoder:\n  name: sine\n")
    code = (
        "import torch; from diffuspeech import load_config, build_component, validate_config;"
        f"c = load_config({str(cfg)!r}); validate_config(c);"
        "s = build_component('schedulers', c.scheduler); v = build_component('vocoders', c.vocoder);"
        "print(type(s).__module__, s.mask_prob(torch.tensor([0.2, 0.3])).tolist(), v.decode_one(torch.tensor([1, 2, 3])).shape[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=installed)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["diffuspeech_plugin_example.plugin", "[0.0,", "1.0]", "1920"]
    bad = run_cli(installed, "config", "validate", str(cfg), "scheduler.treshold=0.1")
    assert bad.returncode == 2
    assert "scheduler.treshold: unknown key for schedulers 'step'; valid keys: threshold" in bad.stderr


def test_installed_components_pass_the_conformance_kit(installed):
    code = (
        "from diffuspeech import build_component; from diffuspeech.testing import check_component;"
        "check_component('schedulers', build_component('schedulers', {'name': 'step', 'threshold': 0.3}));"
        "check_component('vocoders', build_component('vocoders', {'name': 'sine', 'num_units': 100}));"
        "print('conforms')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=installed)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "conforms"
