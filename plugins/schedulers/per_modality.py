"""Per-modality composite: text and speech each follow their own schedule.

    scheduler:
      name: per_modality
      text: {name: cosine}
      speech: {name: linear}

``speech_delay`` (0..1) makes speech start later in sampling: speech time runs
``t_speech = min(1, t / (1 - speech_delay))``, so with ``speech_delay: 0.5`` the speech
answer stays fully masked until the text thinking is half revealed ("thinking first").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from diffuspeech.component import component_field
from diffuspeech.modality import SPEECH, TEXT
from diffuspeech.scheduler import MaskScheduler


class PerModalitySchedule(MaskScheduler):
    @dataclass
    class Config:
        text: Any = component_field("schedulers", "cosine")  # schedule node for text tokens ({name: ..., ...settings})
        speech: Any = component_field("schedulers", "cosine")  # schedule node for speech units
        speech_delay: float = 0.0  # 0 = joint; >0 holds speech masked while text starts revealing

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        from diffuspeech.compose import build_component

        self.check_config(self.config, "scheduler")
        self.text = build_component("schedulers", self.config.text, path="scheduler.text")
        self.speech = build_component("schedulers", self.config.speech, path="scheduler.speech")

    @classmethod
    def check_config(cls, config, path: str) -> None:
        if not 0.0 <= float(config.speech_delay) < 1.0:
            raise ValueError(f"{path}.speech_delay must be in [0, 1), got {config.speech_delay}")

    def mask_prob(self, t: torch.Tensor, modality: str = TEXT) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float32)
        if modality == SPEECH:
            delay = float(self.config.speech_delay)
            return self.speech.mask_prob((t / (1.0 - delay)).clamp(max=1.0), SPEECH)
        return self.text.mask_prob(t, TEXT)
