"""Models shipped inside the package: the embedded default (``arith``, masked diffusion) and its
autoregressive baseline (``arith-ar``), both trained by ``diffuspeech recipe arith train``."""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = ASSETS_DIR / "arith"
EMBEDDED_MODELS = {  # name for --model -> (folder, what it is)
    "arith": (DEFAULT_MODEL_DIR, "spoken arithmetic, masked diffusion (the default)"),
    "arith-ar": (ASSETS_DIR / "arith_ar", "spoken arithmetic, the same recipe with causal attention + autoregressive objective and decoding"),
}


def default_model_dir() -> Path:
    """The embedded spoken-arithmetic model (trained by ``diffuspeech recipe arith train``)."""
    return embedded_model_dir("arith")


def embedded_model_dir(name: str) -> Path:
    """The folder of the embedded model ``name`` (see :data:`EMBEDDED_MODELS`)."""
    if name not in EMBEDDED_MODELS:
        raise FileNotFoundError(f"no embedded model {name!r}; embedded models: {', '.join(EMBEDDED_MODELS)}")
    folder = EMBEDDED_MODELS[name][0]
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the embedded model {name!r} is missing from {folder}; reinstall diffuspeech, "
            "or train one with `diffuspeech recipe arith prepare` + `diffuspeech recipe arith train` and pass --model"
        )
    return folder


def resolve_model_dir(model: str | None) -> Path:
    """``--model``: a saved model folder, an embedded model's name (``arith``, ``arith-ar``), or None (the default)."""
    if not model:
        return default_model_dir()
    if model in EMBEDDED_MODELS and not Path(model).exists():
        return embedded_model_dir(model)
    return Path(model)
