"""Models shipped with the arith recipe, trained by ``diffuspeech recipe arith train`` (and
``arith-diffa`` by ``recipe arith diffa``).

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
DIFFA_MODEL_DIR = ASSETS_DIR / "arith_diffa"
OPTIONAL_MODELS = {  # registered when installed: (folder, what it is)
    "arith-diffa": (DIFFA_MODEL_DIR, "DIFFA-style: a frozen text diffusion LM hears through adapters (tasks s2t, asr, rate)"),
}


def register(register_model) -> None:
    """Register the embedded models (called by the recipe's ``register_models`` hook)."""
    for i, (name, (folder, what)) in enumerate(EMBEDDED_MODELS.items()):
        register_model(name, folder, description=what, default=i == 0)
    for name, (folder, what) in OPTIONAL_MODELS.items():
        if (folder / "model.safetensors").is_file():
            register_model(name, folder, description=what)
