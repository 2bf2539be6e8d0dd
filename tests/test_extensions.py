"""Extension kinds: commands, benches, models and objectives registered by a plugin, the CLI built
from them, and what `diffuspeech --help` / `config validate` import."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from diffuspeech import Objective, build_component, hookimpl
from diffuspeech.cli import main
from diffuspeech.model import registered_models, resolve_model_dir
from diffuspeech.objective import LossOutput
from diffuspeech.registry import resolve_ref
from diffuspeech.testing import check_component

ROOT = Path(__file__).resolve().parents[1]


def _configure_hello(parser):
    parser.add_argument("--name", default="world")
    parser.set_defaults(func=lambda args: print(f"hello {args.name}") or 0)


def _bench_run(args):
    return {"device": "cpu", "speedup": 2.0 * args.factor}


def _bench_args(parser):
    parser.add_argument("--factor", type=float, default=1.0)


class ConstantObjective(Objective):
    """A deliberately simple objective: mean CE of every target from its own (clean) position."""

    @dataclass
    class Config:
        scale: float = 1.0  # multiplies the loss

    decoders = ("autoregressive",)

    def loss(self, backbone, batch, generator=None, attention_mask=None):
        target = batch["target"] & batch["valid"]
        logits = backbone.logits(backbone.hidden_states(batch["ids"], attention_mask)[target])  # [N, V]
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["ids"][target]) * self.config.scale
        return LossOutput(loss=loss, num_masked=int(target.sum()), num_target=int(target.sum()))

    def dev_loss(self, backbone, batch, t, generator=None, attention_mask=None):
        return self.loss(backbone, batch, generator, attention_mask).loss


class Plugin:
    def __init__(self, model_dir: Path):
        self.model_dir = model_dir

    @hookimpl
    def register_commands(self, register):
        register("hello", _configure_hello, help="say hello")
        register("greet loudly", "tests.test_extensions:_configure_hello", help="a nested command, lazily imported")

    @hookimpl
    def register_benches(self, register):
        register("twice", _bench_run, add_arguments=_bench_args, help="a bench from a plugin")

    @hookimpl
    def register_models(self, register):
        register("mine", self.model_dir, description="a model from a plugin")

    @hookimpl
    def register_objectives(self, register):
        register("constant", ConstantObjective)


@pytest.fixture
def plugged(fresh_registry, tmp_path):
    model_dir = tmp_path / "mine"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"")
    assert fresh_registry.add_plugin(Plugin(model_dir), name="in-test", package="in-test", version="1.0"), fresh_registry.failures
    return fresh_registry, model_dir


def test_plugin_commands_nest_and_run(plugged, capsys):
    assert main(["hello", "--name", "you"]) == 0
    assert capsys.readouterr().out.strip() == "hello you"
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    listing = capsys.readouterr().out
    assert "hello" in listing and "say hello" in listing and "greet" in listing


def test_plugin_bench_runs_through_the_bench_command(plugged, capsys):
    assert main(["bench", "twice", "--factor", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"device": "cpu", "speedup": 6.0}


def test_plugin_model_is_resolvable_by_name(plugged):
    _, model_dir = plugged
    assert registered_models()["mine"][0] == model_dir
    assert resolve_model_dir("mine") == model_dir
    assert resolve_model_dir(None) == registered_models()["arith"][0]  # the recipe's default stays the default


def test_plugin_objective_builds_and_conforms(plugged):
    objective = build_component("objectives", {"name": "constant", "scale": 2.0}, "objective")
    check_component("objectives", objective)


def test_plugins_command_lists_extensions(plugged, capsys):
    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {c["name"] for c in data["commands"]} >= {"hello", "greet loudly", "train", "generate", "demo", "eval arith"}
    assert any(b["name"] == "twice" and b["package"] == "in-test" for b in data["benches"])
    assert {m["name"] for m in data["models"]} >= {"arith", "arith-mdm", "arith-ar", "mine"}
    assert any(o["name"] == "constant" for o in data["objectives"])


@pytest.mark.parametrize("hook,args,error", [
    ("register_commands", ("Bad Name", _configure_hello), "invalid command name 'Bad Name'"),
    ("register_commands", ("ok", 42), "needs configure(parser)"),
    ("register_commands", ("ok", _configure_hello), "unknown register() keyword(s) ['colour']"),
    ("register_benches", ("b", "not a reference"), "needs run(args) -> dict"),
    ("register_models", ("m", 3), "needs a folder path"),
])
def test_bad_extension_registrations_are_isolated(fresh_registry, hook, args, error):
    kwargs = {"colour": "red"} if "keyword" in error else {}

    class Bad:
        pass

    def impl(register):
        register(*args, **kwargs)

    setattr(Bad, hook, staticmethod(hookimpl(impl)))
    assert not fresh_registry.add_plugin(Bad(), name="bad")
    assert error in fresh_registry.failures[-1].error
    assert "train" in fresh_registry.names("commands")  # the rest keep working


def test_lazy_references_resolve():
    assert resolve_ref("diffuspeech.cli:main") is main
    assert resolve_ref(main) is main


def _imports_of(*argv: str) -> set[str]:
    code = (
        "import sys\nfrom diffuspeech.cli import main\n"
        f"try:\n    main({list(argv)!r})\nexcept SystemExit:\n    pass\n"
        "print('\\n'.join(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


HEAVY = ("scipy", "matplotlib", "pocketsphinx", "espeakng_loader", "jiwer", "diffuspeech.sampling.generation",
         "diffuspeech.sampling.autoregressive", "diffuspeech.sampling.hybrid", "diffuspeech.sampling.kernels", "diffuspeech.pipeline",
         "diffuspeech.training.trainer")


@pytest.mark.parametrize("argv", [("--help",), ("config", "validate", str(ROOT / "configs" / "diffuspeech_llada8b.yaml"))])
def test_help_and_config_validate_import_no_task_or_engine(argv):
    loaded = _imports_of(*argv)
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert not heavy, f"{' '.join(argv)} imported {heavy}"


def test_recipe_commands_name_the_missing_extra(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("pocketsphinx", "jiwer") else real(name, *a))
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "pocketsphinx, jiwer missing" in err and "pip install 'diffuspeech[arith]'" in err
    assert "Traceback" not in err


BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'scipy', 'matplotlib', 'pocketsphinx', 'espeakng_loader', 'jiwer'}:
            raise ImportError(f'{name} is not installed (blocked by the test)')
        return None
sys.meta_path.insert(0, Block())
from diffuspeech.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_framework_works_without_the_arith_extra(tmp_path):
    """What `pip install diffuspeech` (no extras) gives: listing, validation and generation on the embedded model."""
    def run(*argv):
        return subprocess.run([sys.executable, "-c", BLOCKER, *argv], capture_output=True, text=True, cwd=ROOT)

    assert run("plugins").returncode == 0
    assert run("config", "validate", str(ROOT / "configs" / "diffuspeech_llada8b.yaml"), "backbone.path=/x").returncode in (0, 2)
    out = run("generate", "--task", "tts", "--text", "seven", "--out-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["audio"].endswith(".wav")
    demo = run("demo")
    assert demo.returncode == 2 and "pip install 'diffuspeech[arith]'" in demo.stderr
