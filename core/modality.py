"""Modalities of canvas positions. Integer codes are used in per-id / per-position maps."""

from __future__ import annotations

TEXT = "text"
SPEECH = "speech"
SPECIAL = "special"

MODALITIES = (TEXT, SPEECH, SPECIAL)
MODALITY_CODE = {TEXT: 0, SPEECH: 1, SPECIAL: 2}  # value stored in modality maps
CODE_MODALITY = {v: k for k, v in MODALITY_CODE.items()}

# A condition segment of continuous speech: encoder + adapter embeddings instead of token ids
# (DIFFA). Its canvas positions carry the SPEECH code; see diffuspeech.speech_features.
SPEECH_FEATURES = "speech_features"
