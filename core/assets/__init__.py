"""Assets shipped inside the package: the embedded default model (``arith``)."""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = ASSETS_DIR / "arith"


def default_model_dir() -> Path:
    """The embedded spoken-arithmetic model (trained by ``diffuspeech recipe arith train``)."""
    if not (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the embedded default model is missing from {DEFAULT_MODEL_DIR}; reinstall diffuspeech, "
            "or train one with `diffuspeech recipe arith prepare` + `diffuspeech recipe arith train` and pass --model"
        )
    return DEFAULT_MODEL_DIR
