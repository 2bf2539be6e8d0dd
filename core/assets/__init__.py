"""Models shipped inside the package, all trained by ``diffuspeech recipe arith train``.

``arith`` (the default) is TtT-style: the silent thought and the text answer are decoded left
to right, the spoken answer by masked diffusion. ``arith-mdm`` decodes everything by masked
diffusion (DiffuSpeech-style); ``arith-ar`` everything autoregressively (the baseline).
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = ASSETS_DIR / "arith"
EMBEDDED_MODELS = {  # name for --model -> (folder, what it is); the first is the default
    "arith": (DEFAULT_MODEL_DIR, "TtT-style: text left to right, spoken answer by masked diffusion"),
    "arith-mdm": (ASSETS_DIR / "arith_mdm", "everything by masked diffusion, DiffuSpeech-style"),
    "arith-ar": (ASSETS_DIR / "arith_ar", "autoregressive baseline"),
}
MODEL_HELP = "saved model folder, or an embedded model: " + ", ".join(
    f"{name} ({'the default; ' if i == 0 else ''}{what})" for i, (name, (_, what)) in enumerate(EMBEDDED_MODELS.items())
)  # the --model help of every command


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
    """``--model``: a saved model folder, an embedded model's name (:data:`EMBEDDED_MODELS`), or None (the default)."""
    if not model:
        return default_model_dir()
    if model in EMBEDDED_MODELS and not Path(model).exists():
        return embedded_model_dir(model)
    return Path(model)
