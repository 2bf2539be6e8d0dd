"""Training a unit HiFi-GAN on (units, waveform) pairs: the engine of ``diffuspeech train-vocoder``.

Losses are speechbrain's (``speechbrain.lobes.models.HifiGAN``): mel-spectrogram L1
(``L1SpecLoss``), an optional multi-resolution STFT loss, and - once ``gan_start_step`` is
reached - the least-squares adversarial and feature-matching losses against speechbrain's
multi-period and/or multi-scale discriminators (``GeneratorLoss`` / ``DiscriminatorLoss``),
plus the duration loss when the generator has a duration predictor.

Run folder layout::

    train_config.json     resolved training settings + architecture + data source
    checkpoint/           latest checkpoint; swapped in atomically (written as checkpoint.tmp)
        vocoder.json, generator.safetensors   -> usable as `vocoder: {name: unit_hifigan, path: RUN/checkpoint}`
        discriminator.safetensors, optimizer.pt (tensors only, loads with weights_only=True), state.json
    samples/reference/<id>.wav, samples/step_000500/<id>.wav
    metrics.jsonl         one line of losses per logging interval

The speechbrain discriminators are full size (~70M parameters), far too slow for a CPU:
the ``tiny`` preset therefore trains on the reconstruction losses only (``gan: none``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from diffuspeech.atomic import atomic_folder, write_json_atomic
from diffuspeech.audio import load_audio, write_audio
from diffuspeech.errors import UserError
from diffuspeech.manifest import BadRow, ManifestError, read_manifest

__all__ = ["VocoderTrainConfig", "TRAIN_PRESETS", "TrainingPair", "VocoderTrainer", "VocoderTrainingError", "read_training_pairs"]

GAN_CHOICES = ("none", "mpd", "msd", "mpd+msd")


class VocoderTrainingError(UserError):
    """Training data or settings that cannot work; the message names the fix."""


@dataclass
class VocoderTrainConfig:
    preset: str = "tiny"  # generator architecture preset (tiny | base25hz), see plugins/vocoders/unit_hifigan_arch.py
    arch: dict[str, Any] = field(default_factory=dict)  # overrides of UnitHifiganArch fields
    num_units: int = 0  # codebook size K; 0 = the tokenizer's
    steps: int = 2000  # total optimisation steps
    batch_size: int = 4  # segments per step
    segment_frames: int = 16  # units per training segment (16 = 0.64 s at 25 Hz)
    lr: float = 2e-4  # AdamW learning rate (generator and discriminator)
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])  # AdamW betas (HiFi-GAN)
    lr_decay: float = 0.999  # learning rate multiplied by this every 100 steps
    mel_weight: float = 45.0  # weight of the mel L1 loss
    stft_weight: float = 1.0  # weight of the multi-resolution STFT loss (0 = off)
    gan: str = "none"  # discriminators: none | mpd | msd | mpd+msd
    gan_start_step: int = 0  # mel/STFT-only warm-up steps before the discriminators join
    mpd_periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])  # subset of speechbrain's MPD periods
    adversarial_weight: float = 1.0  # least-squares generator loss weight
    feature_weight: float = 10.0  # feature-matching loss weight
    duration_weight: float = 1.0  # duration-predictor loss weight (generators with a duration predictor)
    loss_hop: int = 160  # hop of the mel loss spectrogram (finer than the unit hop)
    loss_win: int = 640  # window of the mel loss spectrogram
    loss_n_fft: int = 1024  # FFT size of the mel loss spectrogram
    loss_n_mels: int = 80  # mel bands of the mel loss
    grad_clip: float = 100.0  # max gradient norm (0 = no clipping)
    save_every: int = 500  # steps between checkpoints (and at the end)
    sample_every: int = 500  # steps between audio samples written to samples/
    num_samples: int = 2  # utterances voiced at each sample step
    log_every: int = 25  # steps between metrics.jsonl lines
    seed: int = 0  # seed of initialisation and segment sampling
    device: str = "cpu"  # torch device

    def validate(self) -> None:
        if self.gan not in GAN_CHOICES:
            raise VocoderTrainingError(f"gan must be one of {', '.join(GAN_CHOICES)}, got {self.gan!r}")
        for name in ("steps", "batch_size", "segment_frames", "save_every", "sample_every", "log_every"):
            if getattr(self, name) < 1:
                raise VocoderTrainingError(f"{name} must be >= 1, got {getattr(self, name)}")
        if len(self.betas) != 2:
            raise VocoderTrainingError(f"betas needs two numbers, got {self.betas}")


TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"preset": "tiny", "gan": "none", "batch_size": 4, "segment_frames": 16},
    "base25hz": {"preset": "base25hz", "gan": "mpd+msd", "batch_size": 16, "segment_frames": 32, "steps": 200000,
                 "save_every": 5000, "sample_every": 5000, "log_every": 100, "stft_weight": 0.0},
}

# Settings that may change when a run is resumed; everything else must stay as it was.
RESUMABLE = ("steps", "save_every", "sample_every", "num_samples", "log_every", "device")


@dataclass
class TrainingPair:
    id: str
    units: torch.Tensor  # [T] long
    audio: torch.Tensor  # [T * hop] float, aligned with the units
    speaker: int = 0


# ----------------------------------------------------------------------------- data
def read_training_pairs(
    manifest: str | Path,
    sample_rate: int,
    hop_length: int,
    num_units: int,
    tokenizer: Any | None = None,
    progress: bool = True,
) -> list[TrainingPair]:
    """JSONL lines ``{"audio": path, "units": [..] (optional), "id": .. (optional), "speaker": int (optional)}``.

    Units missing from a line are computed with ``tokenizer``. Audio is read at
    ``sample_rate`` and trimmed/padded to ``len(units) * hop_length``; a mismatch of more
    than two frames means the units belong to another frame rate and is an error.
    """
    from tqdm import tqdm

    path = Path(manifest)
    try:
        lines = list(read_manifest(path))
    except ManifestError as exc:
        raise VocoderTrainingError(str(exc)) from None
    if not lines:
        raise VocoderTrainingError(f"{path}: the manifest is empty")
    pairs: list[TrainingPair] = []
    for lineno, obj in tqdm(lines, desc="reading pairs", unit="utt", disable=not progress):
        where = f"{path}:{lineno}"
        if isinstance(obj, BadRow):
            raise VocoderTrainingError(f"{where}: {obj}")
        if "audio" not in obj:
            raise VocoderTrainingError(f"{where}: each line needs an 'audio' path, got {json.dumps(obj)[:100]!r}")
        audio_path = Path(str(obj["audio"]))
        audio_path = audio_path if audio_path.is_absolute() else path.parent / audio_path
        wav = load_audio(audio_path, sample_rate)  # [S]
        if "units" in obj:
            units = torch.as_tensor(obj["units"], dtype=torch.long).reshape(-1)
        elif tokenizer is not None:
            tok_wav = wav if tokenizer.sample_rate == sample_rate else load_audio(audio_path, tokenizer.sample_rate)
            units = tokenizer.encode_one(tok_wav).long().cpu()
        else:
            raise VocoderTrainingError(f"{where}: no 'units' on this line; give --tokenizer-config to compute them")
        if units.numel() == 0:
            raise VocoderTrainingError(f"{where}: empty unit sequence")
        bad = units[(units < 0) | (units >= num_units)]
        if bad.numel():
            raise VocoderTrainingError(
                f"{where}: unit id {int(bad[0])} outside [0, {num_units}); --num-units must match the tokenizer's codebook"
            )
        target = units.numel() * hop_length
        if abs(wav.numel() - target) > 2 * hop_length:
            raise VocoderTrainingError(
                f"{where}: {units.numel()} units x {hop_length} samples = {target} samples, but the audio has "
                f"{wav.numel()} at {sample_rate} Hz: the units' frame rate does not match the vocoder "
                f"({sample_rate / hop_length:g} units/s)"
            )
        wav = torch.nn.functional.pad(wav, (0, max(0, target - wav.numel())))[:target]
        speaker = int(obj.get("speaker", 0))
        pairs.append(TrainingPair(str(obj.get("id", audio_path.stem)), units, wav, speaker))
    return pairs


class SegmentSampler:
    """Random aligned (units, audio) crops of ``frames`` units from the usable pairs."""

    def __init__(self, pairs: list[TrainingPair], frames: int, hop: int, seed: int) -> None:
        self.pairs = [p for p in pairs if p.units.numel() >= frames]
        self.skipped = len(pairs) - len(self.pairs)
        if not self.pairs:
            shortest = min(p.units.numel() for p in pairs)
            raise VocoderTrainingError(
                f"every utterance is shorter than segment_frames={frames} units (longest has "
                f"{max(p.units.numel() for p in pairs)}, shortest {shortest}); lower --segment-frames"
            )
        self.frames, self.hop = frames, hop
        self.rng = random.Random(seed)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(units [B, F], audio [B, F * hop], speaker [B])``."""
        units, audio, speakers = [], [], []
        for _ in range(size):
            p = self.rng.choice(self.pairs)
            start = self.rng.randint(0, p.units.numel() - self.frames)
            units.append(p.units[start : start + self.frames])
            audio.append(p.audio[start * self.hop : (start + self.frames) * self.hop])
            speakers.append(p.speaker)
        return torch.stack(units), torch.stack(audio), torch.tensor(speakers)


# ----------------------------------------------------------------------------- losses
class MultiResolutionSTFTLoss(torch.nn.Module):
    """Log-magnitude L1 + spectral convergence averaged over STFT resolutions: ``(mag, sc)``.

    Same contract as speechbrain's ``MultiScaleSTFTLoss`` (whose ``torch.stft`` call lacks
    ``return_complex`` and fails on current torch), so it plugs into ``GeneratorLoss``.
    """

    def __init__(self, resolutions: tuple[tuple[int, int, int], ...] = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))):
        super().__init__()
        self.resolutions = resolutions  # (n_fft, hop, win) triples

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # [B, S] each
        mag = sc = y.new_zeros(())
        for n_fft, hop, win in self.resolutions:
            window = torch.hann_window(win, device=y.device)
            s_hat = torch.stft(y_hat, n_fft, hop, win, window, return_complex=True).abs().clamp_min(1e-7)  # [B, F, T]
            s = torch.stft(y, n_fft, hop, win, window, return_complex=True).abs().clamp_min(1e-7)
            mag = mag + (s.log() - s_hat.log()).abs().mean()
            sc = sc + torch.linalg.norm(s - s_hat) / torch.linalg.norm(s)
        n = len(self.resolutions)
        return mag / n, sc / n


# ----------------------------------------------------------------------------- trainer
class VocoderTrainer:
    """Builds generator + discriminators + optimisers, trains, checkpoints and resumes."""

    def __init__(self, config: VocoderTrainConfig, run_dir: str | Path, arch: Any) -> None:
        from speechbrain.lobes.models import HifiGAN as H

        from .arch import UnitHifigan

        config.validate()
        self.config, self.run_dir, self.device = config, Path(run_dir), torch.device(config.device)
        torch.manual_seed(config.seed)
        self.generator = UnitHifigan(arch).to(self.device)
        discs = []
        if "mpd" in config.gan.split("+"):
            mpd = H.MultiPeriodDiscriminator()
            known = [d.period for d in mpd.discriminators]
            if not config.mpd_periods or not set(config.mpd_periods) <= set(known):
                raise VocoderTrainingError(f"mpd_periods must be a non-empty subset of {known}, got {config.mpd_periods}")
            mpd.discriminators = torch.nn.ModuleList(d for d in mpd.discriminators if d.period in config.mpd_periods)
            discs.append(mpd)
        if "msd" in config.gan.split("+"):
            discs.append(H.MultiScaleDiscriminator())
        self.discriminators = torch.nn.ModuleList(discs).to(self.device)
        betas = (float(config.betas[0]), float(config.betas[1]))
        self.opt_g = torch.optim.AdamW(self.generator.parameters(), config.lr, betas=betas)
        self.opt_d = torch.optim.AdamW(self.discriminators.parameters(), config.lr, betas=betas) if discs else None
        sr = arch.sample_rate
        self.gen_loss = H.GeneratorLoss(
            stft_loss=MultiResolutionSTFTLoss() if config.stft_weight > 0 else None,
            stft_loss_weight=config.stft_weight,
            l1_spec_loss=H.L1SpecLoss(
                sample_rate=sr, hop_length=config.loss_hop, win_length=config.loss_win, n_mel_channels=config.loss_n_mels,
                n_fft=config.loss_n_fft, mel_fmax=sr / 2,
            ),
            l1_spec_loss_weight=config.mel_weight,
            mseg_loss=H.MSEGLoss(),
            mseg_loss_weight=config.adversarial_weight,
            feat_match_loss=H.MelganFeatureLoss(),
            feat_match_loss_weight=config.feature_weight,
            mseg_dur_loss=bool(arch.duration_predictor),
            mseg_dur_loss_weight=config.duration_weight,
        )
        self.disc_loss = H.DiscriminatorLoss(msed_loss=H.MSEDLoss())
        self.step = 0

    # ------------------------------------------------------------------ discriminators
    def _discriminate(self, wav: torch.Tensor) -> tuple[list, list]:
        scores, feats = [], []
        for d in self.discriminators:
            s, f = d(wav)
            scores += s
            feats += f
        return scores, feats

    def _lr(self) -> float:
        return self.config.lr * self.config.lr_decay ** (self.step // 100)

    def train_step(self, units: torch.Tensor, audio: torch.Tensor, speaker: torch.Tensor) -> dict[str, float]:
        """One generator (+ discriminator) update on ``units [B, F]`` / ``audio [B, F * hop]``."""
        import speechbrain as sb

        cfg = self.config
        for opt in filter(None, (self.opt_g, self.opt_d)):
            for group in opt.param_groups:
                group["lr"] = self._lr()
        units, y = units.to(self.device), audio.to(self.device)[:, None]  # [B, F], [B, 1, S]
        speaker = speaker.to(self.device) if self.generator.speakers is not None else None
        self.generator.train()
        y_hat, (log_dur_pred, log_dur) = self.generator.forward_train(units, speaker)  # [B, 1, S]
        use_gan = self.opt_d is not None and self.step >= cfg.gan_start_step
        out: dict[str, float] = {}
        if use_gan:
            scores_fake, _ = self._discriminate(y_hat.detach())
            scores_real, _ = self._discriminate(y)
            d_loss = self.disc_loss(scores_fake, scores_real)["D_loss"]
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self._clip(self.discriminators)
            self.opt_d.step()
            out["d_loss"] = float(d_loss.detach())
            scores_fake, feats_fake = self._discriminate(y_hat)
            with torch.no_grad():
                _, feats_real = self._discriminate(y)
        else:
            scores_fake = feats_fake = feats_real = None
        losses = self.gen_loss(sb.Stage.TRAIN, y_hat, y, scores_fake, feats_fake, feats_real, log_dur_pred, log_dur)
        self.opt_g.zero_grad(set_to_none=True)
        losses["G_loss"].backward()
        self._clip(self.generator)
        self.opt_g.step()
        self.step += 1
        for key, value in losses.items():
            if isinstance(value, torch.Tensor):
                out[key] = float(value.detach())
        return out

    def _clip(self, module: torch.nn.Module) -> None:
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(module.parameters(), self.config.grad_clip)

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoint"

    def save_checkpoint(self, provenance: dict[str, Any] | None = None) -> Path:
        """Write the checkpoint folder next to the old one, then swap it in (never a half-written checkpoint)."""
        from .formats import save_diffuspeech

        final = self.checkpoint_dir
        with atomic_folder(final, backup=self.run_dir / "checkpoint.old") as tmp:  # load_checkpoint falls back to .old
            save_diffuspeech(self.generator, tmp, extra={"step": self.step, **(provenance or {})})
            disc = {k: v.detach().cpu().contiguous() for k, v in self.discriminators.state_dict().items()}
            save_file(disc, str(tmp / "discriminator.safetensors"))
            optim = {"g": self.opt_g.state_dict(), "d": self.opt_d.state_dict() if self.opt_d else {}}
            torch.save(optim, tmp / "optimizer.pt")  # read back with weights_only=True
            write_json_atomic(tmp / "state.json", {"step": self.step})
        return final

    def load_checkpoint(self) -> int:
        """Restore from ``checkpoint/`` (or ``checkpoint.old`` after a crash mid-swap); returns the step."""
        from .formats import load_state_strict

        folder = self.checkpoint_dir
        if not (folder / "state.json").is_file():
            folder = self.run_dir / "checkpoint.old"
        if not (folder / "state.json").is_file():
            raise VocoderTrainingError(f"{self.run_dir}: no checkpoint to resume from (expected checkpoint/state.json)")
        load_state_strict(self.generator, load_file(str(folder / "generator.safetensors")), str(folder))
        self.discriminators.load_state_dict(load_file(str(folder / "discriminator.safetensors")), strict=True)
        optim = torch.load(folder / "optimizer.pt", map_location=self.device, weights_only=True)
        self.opt_g.load_state_dict(optim["g"])
        if self.opt_d is not None:
            self.opt_d.load_state_dict(optim["d"])
        self.step = int(json.loads((folder / "state.json").read_text())["step"])
        return self.step

    # ------------------------------------------------------------------ samples
    @torch.no_grad()
    def write_samples(self, pairs: list[TrainingPair]) -> Path:
        """Voice the first ``num_samples`` utterances with the current generator."""
        sr = self.generator.arch.sample_rate
        ref_dir = self.run_dir / "samples" / "reference"
        out_dir = self.run_dir / "samples" / f"step_{self.step:07d}"
        self.generator.eval()
        for p in pairs[: self.config.num_samples]:
            if not (ref_dir / f"{p.id}.wav").exists():
                write_audio(ref_dir / f"{p.id}.wav", p.audio, sr)
            units = p.units[None].to(self.device)
            speaker = torch.tensor([p.speaker], device=self.device) if self.generator.speakers is not None else None
            wav, _ = self.generator.synthesize(units, torch.tensor([units.shape[1]], device=self.device), speaker)
            write_audio(out_dir / f"{p.id}.wav", wav[0].clamp(-1, 1), sr)
        return out_dir

    # ------------------------------------------------------------------ loop
    def fit(
        self,
        pairs: list[TrainingPair],
        progress: bool = True,
        provenance: dict[str, Any] | None = None,
        on_step: Callable[[int, dict[str, float]], None] | None = None,
    ) -> dict[str, float]:
        from tqdm import tqdm

        cfg = self.config
        hop = self.generator.hop_length
        sampler = SegmentSampler(pairs, cfg.segment_frames, hop, seed=cfg.seed + self.step)
        if sampler.skipped:
            tqdm.write(f"skipping {sampler.skipped} utterances shorter than {cfg.segment_frames} units")
        metrics_path = self.run_dir / "metrics.jsonl"
        running: dict[str, list[float]] = {}
        last: dict[str, float] = {}
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train-vocoder", unit="step", disable=not progress)
        started = time.time()
        while self.step < cfg.steps:
            losses = self.train_step(*sampler.batch(cfg.batch_size))
            if not all(math.isfinite(v) for v in losses.values()):
                raise VocoderTrainingError(f"step {self.step}: non-finite loss {losses}; lower --lr")
            for k, v in losses.items():
                running.setdefault(k, []).append(v)
            bar.update(1)
            bar.set_postfix(mel=f"{losses.get('G_l1_spec_loss', 0.0):.3f}", g=f"{losses['G_loss']:.2f}")
            if on_step is not None:
                on_step(self.step, losses)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                last = {k: sum(v) / len(v) for k, v in running.items()}
                running = {}
                line = {"step": self.step, "lr": self._lr(), "elapsed_s": round(time.time() - started, 2), **last}
                with open(metrics_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(line) + "\n")
            if self.step % cfg.sample_every == 0 or self.step == cfg.steps:
                self.write_samples(pairs)
            if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                self.save_checkpoint(provenance)
        bar.close()
        return last


def resolve_train_config(base: dict[str, Any], saved: dict[str, Any] | None) -> VocoderTrainConfig:
    """Merge preset defaults + explicit settings, or check them against a resumed run's settings."""
    fields = {f.name for f in dataclasses.fields(VocoderTrainConfig)}
    unknown = sorted(set(base) - fields)
    if unknown:
        raise VocoderTrainingError(f"unknown training settings {unknown}; valid: {sorted(fields)}")
    if saved is not None:
        changed = sorted(k for k, v in base.items() if k not in RESUMABLE and saved.get(k) != v)
        if changed:
            raise VocoderTrainingError(
                f"--resume: {changed} differ from the run's train_config.json; only {list(RESUMABLE)} may change "
                f"when resuming (start a new --out folder to change the others)"
            )
        merged = {**saved, **{k: v for k, v in base.items() if k in RESUMABLE}}
        return VocoderTrainConfig(**{k: v for k, v in merged.items() if k in fields})
    preset_name = base.get("preset", VocoderTrainConfig.preset)
    if preset_name not in TRAIN_PRESETS:
        raise VocoderTrainingError(f"unknown preset {preset_name!r}; presets: {', '.join(TRAIN_PRESETS)}")
    return VocoderTrainConfig(**{**TRAIN_PRESETS[preset_name], **base})
