"""TtT's training strategies (BANOM, PPM, SST) and its loss normalisation, on the hybrid objective."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from diffuspeech import build_component
from diffuspeech.compose import ConfigError
from diffuspeech.modality import MODALITY_CODE
from diffuspeech.objective import ObjectiveContext, build_objective
from diffuspeech.plugins.objectives.hybrid import preserved_prefix, speech_spans, truncate_last_speech_span

V = 48
MASK = V - 1
SP, TX, SC = MODALITY_CODE["special"], MODALITY_CODE["text"], MODALITY_CODE["speech"]

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_llada():
    node = {"name": "llada", "preset": "tiny", "d_model": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2,
            "mlp_hidden_size": 64, "vocab_size": V, "max_sequence_length": 64, "seed": 0}
    return build_component("backbones", node, "backbone").eval()


CAUSAL = build_component("attention", "causal")


def context():
    return ObjectiveContext(build_component("schedulers", "linear"), build_component("noisers", "iid"), MASK, CAUSAL, "causal")


def causal(batch):
    return CAUSAL.mask(batch["modality"], batch["valid"])


def interleaved_batch():
    """[B=3, L=20]: text target, then a 6-unit speech span + its end token, text again, a 4-unit span + end."""
    row = [SP, SP, TX, TX, SP, SC, SC, SC, SC, SC, SC, SP, TX, TX, SP, SC, SC, SC, SC, SP]
    modality = torch.tensor([row, row, row])
    target = torch.zeros_like(modality, dtype=torch.bool)
    target[:, 2:4] = target[:, 5:12] = target[:, 12:14] = target[:, 15:20] = True
    valid = torch.ones_like(target)
    ids = torch.randint(0, V - 1, modality.shape, generator=torch.Generator().manual_seed(1))
    return {"ids": ids, "modality": modality, "target": target, "valid": valid,
            "segment": torch.zeros_like(ids), "condition": ~target}


def test_strategy_options_are_validated():
    for bad, key in [({"clean_audio_prob": 1.5}, "clean_audio_prob"), ({"truncate_range": [0.9, 0.3]}, "truncate_range"),
                     ({"audio_span": 0}, "audio_span"), ({"normalize": "per_row"}, "normalize")]:
        with pytest.raises(ConfigError, match=rf"objective.{key}"):
            build_objective({"name": "hybrid", **bad}, context())


def sigma_ok(hits: int, n: int, p: float) -> bool:
    return abs(hits - n * p) <= 3 * math.sqrt(n * p * (1 - p))


def test_clean_audio_batches_fire_at_their_rate_and_score_text_only():
    objective = build_objective({"name": "hybrid", "clean_audio_prob": 0.3}, context())
    model, batch = tiny_llada(), interleaved_batch()
    n, clean = 400, 0
    gen = torch.Generator().manual_seed(0)
    text_targets = int((batch["target"] & (batch["modality"] != SC)).sum())
    for _ in range(n):
        out = objective.loss(model, batch, gen, causal(batch))
        clean += out.num_masked == text_targets  # nothing but the text targets was scored
    assert sigma_ok(clean, n, 0.3), clean


def test_prefix_preservation_keeps_audio_before_a_span_start_clean():
    batch = interleaved_batch()
    speech = batch["target"] & (batch["modality"] == SC)
    positions = speech[0].nonzero().flatten().tolist()  # 10 speech targets: spans of 4 -> 3 spans
    n, fired, starts = 3000, 0, set()
    gen = torch.Generator().manual_seed(0)
    for _ in range(n // 3):
        kept = preserved_prefix(batch, speech, 0.3, 4, gen)
        for r in range(3):
            idx = kept[r].nonzero().flatten().tolist()
            assert idx == positions[: len(idx)] and len(idx) in (0, 4, 8)  # a prefix of whole spans, one span left at least
            fired += bool(idx)
            starts.add(len(idx))
    assert sigma_ok(fired, n, 0.3), fired
    assert starts == {0, 4, 8}  # both span starts get drawn
    objective = build_objective({"name": "hybrid", "prefix_preservation_ratio": 1.0, "audio_span": 4}, context())
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = tiny_llada()

        def hidden_states(self, ids, mask=None):
            seen.append(ids.clone())
            return self.inner.hidden_states(ids, mask)

        def logits(self, h):
            return self.inner.logits(h)

    gen = torch.Generator().manual_seed(3)
    for _ in range(40):
        objective.loss(Spy(), batch, gen, causal(batch))
    masked = torch.stack([s == MASK for s in seen])  # [40, B, L]
    assert not masked[:, ~speech].any()  # only speech targets are ever masked
    assert not masked[:, :, positions[:4]].any()  # the first span is always before the drawn start: never masked


def test_truncated_last_spans_carry_no_end_token():
    batch = interleaved_batch()
    picked = torch.tensor([True, False, True])
    keep = torch.tensor([0.5, 0.5, 0.25])
    out = truncate_last_speech_span(batch, picked, keep)
    assert torch.equal(out["ids"][1], batch["ids"][1])  # an unpicked row is untouched
    for r, kept_units in ((0, 2), (2, 1)):  # last span: 4 units at 15..18, end token at 19
        assert out["valid"][r].sum() == 20 - (4 - kept_units) - 1
        assert torch.equal(out["ids"][r, : 15 + kept_units], batch["ids"][r, : 15 + kept_units])
        tail = out["modality"][r][out["valid"][r]][-1]
        assert tail == SC  # the row now ends inside the audio: no end token
        runs = speech_spans(((out["modality"] == SC) & out["target"] & out["valid"])[r: r + 1])[0]
        assert runs[-1] == (15, 15 + kept_units)


def test_truncation_fires_at_its_rate_and_shortens_the_batch():
    objective = build_objective({"name": "hybrid", "truncate_last_span_prob": 0.5, "truncate_range": [0.3, 0.9]}, context())
    gen = torch.Generator().manual_seed(5)
    picked, keep = zip(*(objective.draw_truncation(3, gen) for _ in range(1000)))
    picked, keep = torch.cat(picked), torch.cat(keep)
    assert sigma_ok(int(picked.sum()), picked.numel(), 0.5)
    assert bool(((keep >= 0.3) & (keep <= 0.9)).all()) and keep.max() - keep.min() > 0.5
    always = build_objective({"name": "hybrid", "truncate_last_span_prob": 1.0}, context())
    batch = interleaved_batch()
    out = always.loss(tiny_llada(), batch, torch.Generator().manual_seed(0), causal(batch))
    assert out.num_target < int((batch["target"] & batch["valid"]).sum())  # every row lost part of its last span


def reference_ttt_loss(model, batch, masked, p_mask):
    """TtT's normalisation by hand, row by row."""
    noisy = torch.where(masked, MASK, batch["ids"])
    logits = model(noisy, causal(batch))  # [B, L, V]
    ar, diff = [], []
    for b in range(noisy.shape[0]):
        text = [F.cross_entropy(logits[b, i - 1], batch["ids"][b, i]) for i in range(noisy.shape[1])
                if batch["target"][b, i] and batch["modality"][b, i] != SC]
        if text:
            ar.append(torch.stack(text).mean())
        speech = [i for i in range(noisy.shape[1]) if batch["target"][b, i] and batch["modality"][b, i] == SC]
        if speech:
            terms = [F.cross_entropy(logits[b, i], batch["ids"][b, i]) / p_mask[b, i] for i in speech if masked[b, i]]
            diff.append((torch.stack(terms).sum() if terms else torch.zeros(())) / len(speech))
    return torch.stack(ar).mean() + torch.stack(diff).mean()


def test_ttt_normalisation_matches_a_per_example_reference():
    from diffuspeech.training.losses import sample_time

    model, batch = tiny_llada(), interleaved_batch()
    batch["target"][2, 2:4] = batch["target"][2, 12:14] = False  # a row with no text target
    objective = build_objective({"name": "hybrid", "normalize": "ttt"}, context())
    out = objective.loss(model, batch, torch.Generator().manual_seed(7), causal(batch))
    g = torch.Generator().manual_seed(7)
    t = sample_time(3, 1e-3, "uniform", g)
    speech = batch["target"] & batch["valid"] & (batch["modality"] == SC)
    masked, p_mask = objective.context.noiser(speech, batch["modality"], t, objective.context.scheduler, g)
    ref = reference_ttt_loss(model, batch, masked & speech, p_mask)
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-6)


def test_ttt_qwen2_config_validates_and_builds_on_the_meta_device():
    from pathlib import Path

    from diffuspeech.compose import load_config, validate_config

    path = Path(__file__).resolve().parents[1] / "configs" / "ttt_qwen2.yaml"
    cfg = load_config(path)
    missing = validate_config(cfg, allow_missing=True, base_dir=path.parent)
    assert set(missing) == {"backbone.path", "vocab.text_tokenizer", "data.manifest", "data.unit_store"}
    fresh = load_config(path, ["backbone.path=null", "backbone.device=meta", "vocab.text_tokenizer=null", "data.manifest=x", "data.unit_store=u"])
    validate_config(fresh, base_dir=path.parent)
    backbone = build_component("backbones", fresh.backbone)
    assert backbone.vocab_size == 152448 and next(backbone.parameters()).device.type == "meta"
    assert 1.5e9 < sum(p.numel() for p in backbone.parameters()) < 1.6e9  # Qwen2.5-1.5B with the extended vocabulary
    objective = build_component("objectives", fresh.objective)
    assert (objective.config.normalize, objective.config.clean_audio_prob, objective.config.truncate_last_span_prob) == ("ttt", 0.1, 0.5)
    assert fresh.attention == "hybrid"
