"""Example plugin: a step schedule and a sine vocoder, written from the README's guide."""

from dataclasses import dataclass

import torch

from diffuspeech import MaskScheduler, Vocoder, hookimpl, validate_units


class StepSchedule(MaskScheduler):
    """Everything masked until t drops below ``threshold``, then nothing."""

    @dataclass
    class Config:
        threshold: float = 0.5  # t at which the mask drops

    def mask_prob(self, t, modality="text"):
        t = torch.as_tensor(t, dtype=torch.float32)
        return (t >= self.config.threshold).float()


class SineVocoder(Vocoder):
    """Each unit becomes a 40 ms sine whose pitch encodes the unit id."""

    @dataclass
    class Config:
        sample_rate: int = 16000  # output Hz
        num_units: int = 500  # accepted ids [0, num_units)

    frame_rate = 25.0  # units per second: 40 ms of audio per unit

    def __init__(self, config=None):
        super().__init__(config)
        self.sample_rate = self.config.sample_rate
        self.num_units = self.config.num_units

    def decode(self, units, lengths=None):
        units, lengths = validate_units(units, lengths, self.num_units, who="sine")  # [B, T], [B]
        hop = int(self.sample_rate / self.frame_rate)
        t = torch.arange(hop) / self.sample_rate  # [hop]
        freq = 100.0 + units.float() * 5.0  # [B, T]
        wav = torch.sin(2 * torch.pi * freq[..., None] * t).reshape(units.shape[0], -1)  # [B, T*hop]
        return wav, lengths * hop


@hookimpl
def register_schedulers(register):
    register("step", StepSchedule)


@hookimpl
def register_vocoders(register):
    register("sine", SineVocoder)
