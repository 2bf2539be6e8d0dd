"""TtT's hybrid: AR text + masked-diffusion speech. Loss parity, decoding parity, config checks, a tiny run.

References are written here from scratch: the loss from full ``[B, L, V]`` logits with a
per-position loop, the decoder as the AR decoder restricted to text followed by the engine.
"""

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from diffuspeech.attention import check_hybrid_policy, sees_only_past
from diffuspeech.compose import ConfigError, build_component
from diffuspeech.modality import MODALITY_CODE
from diffuspeech.model import SpeechDiffusionModel
from diffuspeech.objective import ObjectiveContext, build_objective
from diffuspeech.pipeline import Pipeline
from diffuspeech.plugins.objectives.hybrid import HybridObjective
from diffuspeech.sampling.autoregressive import ARDecodeOptions, ar_decode
from diffuspeech.sampling.generation import CanvasSpec, DecodeOptions, GenerationError, generate
from diffuspeech.sampling.hybrid import hybrid_decode
from diffuspeech.training.losses import sample_time
from diffuspeech.training.trainer import train

V = 48
MASK = V - 1
SP, TX, SC = MODALITY_CODE["special"], MODALITY_CODE["text"], MODALITY_CODE["speech"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: exact, reproducible float order


def tiny_llada(seed: int = 0):
    node = {"name": "llada", "preset": "tiny", "d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 2,
            "mlp_hidden_size": 64, "vocab_size": V, "max_sequence_length": 64, "seed": seed}
    return build_component("backbones", node, "backbone").eval()


def policy_mask(name, modality, valid):
    return build_component("attention", name, "attention").mask(modality, valid)


# --------------------------------------------------------------------------- which states see only the past
def test_sees_only_past_by_policy():
    row = [SP, SP, SC, SC, SC, SP, SP, TX, TX, SP, SP, SC, SC, SC, SP, TX]
    modality = torch.tensor([row])
    valid = torch.ones_like(modality, dtype=torch.bool)
    assert sees_only_past(policy_mask("causal", modality, valid)).all()
    bidir = sees_only_past(policy_mask("bidirectional", modality, valid))[0]
    assert not bidir[:-1].any() and bidir[-1]
    hybrid = sees_only_past(policy_mask("hybrid", modality, valid))[0]
    # speech positions before their span's end see later speech; everything else sees only the past
    expected = torch.tensor([True, True, False, False, True, True, True, True, True, True, True, False, False, True, True, True])
    assert torch.equal(hybrid, expected)


def test_hybrid_objective_needs_text_causal_attention():
    sched, noiser = build_component("schedulers", "linear"), build_component("noisers", "iid")
    for name in ("bidirectional", {"name": "block_causal", "block_size": 4}):
        label = name if isinstance(name, str) else name["name"]
        with pytest.raises(ConfigError, match=rf"objective.name=hybrid .*attention.name='{label}'.*set attention.name=hybrid"):
            build_objective("hybrid", ObjectiveContext(sched, noiser, MASK, build_component("attention", name, "attention"), label))
    for name in ("hybrid", "causal"):
        check_hybrid_policy(build_component("attention", name, "attention"), name)
    built = build_objective("hybrid", ObjectiveContext(sched, noiser, MASK, build_component("attention", "hybrid"), "hybrid"))
    assert isinstance(built, HybridObjective)
    with pytest.raises(ConfigError, match=r"objective.logits_on: unknown key for objectives 'hybrid'"):
        build_objective({"name": "hybrid", "logits_on": "all"}, ObjectiveContext(sched, noiser, MASK))
    with pytest.raises(ConfigError, match="objective.name: unknown objective name 'ttt'; registered objectives: autoregressive, diffusion, hybrid"):
        build_objective("ttt", ObjectiveContext(sched, noiser, MASK))


# --------------------------------------------------------------------------- loss
def mixed_batch():
    """[B=3, L=14]: task, speech condition, text target, speech target; row 1 padded, row 2 speech-free."""
    rows = [
        [SP, SP, SC, SC, SC, SC, SP, TX, TX, TX, SP, SC, SC, SC],
        [SP, SP, SC, SC, SC, SP, TX, TX, SP, SC, SC, SC, SP, SP],
        [SP, SP, TX, TX, TX, TX, SP, TX, TX, TX, TX, TX, SP, SP],
    ]
    modality = torch.tensor(rows)
    target = torch.zeros_like(modality, dtype=torch.bool)
    target[0, 7:10] = target[0, 11:14] = True
    target[1, 6:8] = target[1, 9:12] = True
    target[2, 7:12] = True
    valid = torch.ones_like(target)
    valid[1, 12:] = False
    ids = torch.randint(0, V - 1, modality.shape, generator=torch.Generator().manual_seed(2))
    return {"ids": ids, "modality": modality, "target": target, "valid": valid}


def reference_hybrid_loss(model, batch, masked, p_mask, mask, normalize, weighting):
    noisy = torch.where(masked, MASK, batch["ids"])
    logits = model(noisy, mask)  # [B, L, V]
    per_row, counts = [], []
    for b in range(noisy.shape[0]):
        terms = []
        for i in range(noisy.shape[1]):
            if not batch["target"][b, i]:
                continue
            if batch["modality"][b, i] != SC:
                terms.append(F.cross_entropy(logits[b, i - 1], batch["ids"][b, i]))
            elif masked[b, i]:
                ce = F.cross_entropy(logits[b, i], batch["ids"][b, i])
                terms.append(ce / p_mask[b, i] if weighting == "elbo" else ce)
        per_row.append(torch.stack(terms).sum())
        counts.append(int(batch["target"][b].sum()))
    if normalize == "token":
        return torch.stack(per_row).sum() / sum(counts)
    return torch.stack([s / n for s, n in zip(per_row, counts)]).mean()


@pytest.mark.parametrize("normalize,weighting", [("token", "elbo"), ("sequence", "elbo"), ("token", "none")])
def test_hybrid_loss_and_gradients_match_reference(normalize, weighting):
    model = tiny_llada()
    batch = mixed_batch()
    mask = policy_mask("hybrid", batch["modality"], batch["valid"])
    objective = build_objective(
        {"name": "hybrid", "normalize": normalize, "weighting": weighting},
        ObjectiveContext(build_component("schedulers", "linear"), build_component("noisers", "iid"), MASK, None, "hybrid"),
    )
    # replay the objective's draw (t, then the noiser) to rebuild the same masked set for the reference
    t = sample_time(3, 1e-3, "uniform", torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    sample_time(3, 1e-3, "uniform", g)
    speech_target = batch["target"] & batch["valid"] & (batch["modality"] == SC)
    masked, p_mask = objective.context.noiser(speech_target, batch["modality"], t, objective.context.scheduler, g)
    masked &= speech_target
    assert masked.any() and (speech_target & ~masked).any(), "the draw should mask some speech targets and keep others"
    model.zero_grad()
    ref = reference_hybrid_loss(model, batch, masked, p_mask, mask, normalize, weighting)
    ref.backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = objective.loss(model, batch, torch.Generator().manual_seed(7), mask)
    out.loss.backward()
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip((p.grad for p in model.parameters()), ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    text_targets = int((batch["target"] & batch["valid"] & (batch["modality"] != SC)).sum())
    assert out.num_masked == text_targets + int(masked.sum()) and out.num_target == int((batch["target"] & batch["valid"]).sum())
    # under full attention a text state sees its own token: refused, naming the policy
    bidir = policy_mask("bidirectional", batch["modality"], batch["valid"])
    with pytest.raises(ConfigError, match="attention.name='hybrid'"):  # the name the objective was built with
        objective.loss(model, batch, torch.Generator().manual_seed(7), bidir)


# --------------------------------------------------------------------------- decoding
def hybrid_canvas(cond=(4, 6, 5), text_len=4, speech_len=6, seed=0) -> CanvasSpec:
    """Rows: [task, sos, cond speech..., eos, sot, text masks (ids 0..9, end 9), sos, speech masks (ids 10..46, end 10)]."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for c in cond:
        ids = [40, 41] + torch.randint(10, 40, (c,), generator=g).tolist() + [10, 43] + [MASK] * text_len + [41] + [MASK] * speech_len
        mod = [SP, SP] + [SC] * (c + 1) + [SP] + [TX] * text_len + [SP] + [SC] * speech_len
        seg = [-1] * (c + 4) + [0] * text_len + [-1] + [1] * speech_len
        lo = [0] * (c + 4) + [0] * text_len + [0] + [10] * speech_len
        hi = [V] * (c + 4) + [10] * text_len + [V] + [MASK] * speech_len
        rows.append((ids, mod, seg, lo, hi))
    length = max(len(r[0]) for r in rows)
    pad = lambda x, v: x + [v] * (length - len(x))  # noqa: E731
    valid = torch.tensor([pad([True] * len(r[0]), False) for r in rows])
    modality = torch.tensor([pad(r[1], SP) for r in rows])
    return CanvasSpec(
        tokens=torch.tensor([pad(r[0], 46) for r in rows]), mask_id=MASK, valid=valid, modality=modality,
        segment=torch.tensor([pad(r[2], -1) for r in rows]),
        allowed_lo=torch.tensor([pad(r[3], 0) for r in rows]), allowed_hi=torch.tensor([pad(r[4], V) for r in rows]),
        segment_end_id=torch.tensor([9, 10]), attention_mask=policy_mask("hybrid", modality, valid),
    )


@pytest.mark.parametrize("kv_cache", [False, True])
def test_hybrid_decode_is_text_left_to_right_then_speech_by_the_engine(kv_cache):
    model = tiny_llada()
    canvas = hybrid_canvas()
    speech = (canvas.tokens == MASK) & (canvas.modality == SC)
    text = (canvas.tokens == MASK) & ~speech
    steps = 3
    out = hybrid_decode(
        model, canvas, ARDecodeOptions(kv_cache=kv_cache), DecodeOptions(steps=steps, record_trajectory=True),
    )
    # reference, text: one full forward per token over each row alone, speech still masked, early stop on id 9
    ref = canvas.tokens.clone()
    for b in range(ref.shape[0]):
        n = int(canvas.valid[b].sum())
        ended = False
        for p in range(n):
            if not text[b, p]:
                continue
            if ended:
                ref[b, p] = 9
                continue
            logits = model(ref[b : b + 1, :n], canvas.attention_mask[b : b + 1, :, :n, :n])[0, p - 1]  # [V]
            lo, hi = int(canvas.allowed_lo[b, p]), int(canvas.allowed_hi[b, p])
            ref[b, p] = lo + int(torch.argmax(logits[lo:hi]))
            ended = int(ref[b, p]) == 9
    assert torch.equal(out.tokens[text], ref[text])
    # reference, speech: the engine on the text-filled canvas
    first = ar_decode(model, canvas, ARDecodeOptions(kv_cache=False), only=text)
    assert torch.equal(first.tokens, ref)  # `only` leaves the speech masks alone
    filled = CanvasSpec(**{**canvas.__dict__, "tokens": first.tokens})
    second = generate(model, filled, DecodeOptions(steps=steps))
    assert torch.equal(out.tokens, second.tokens)
    assert out.forward_passes == first.forward_passes + second.forward_passes == out.steps
    assert (out.cached_forwards > 0) == kv_cache
    # trajectory: text passes first (left to right), then speech steps after every text pass
    assert (out.trajectory[~(text | speech)] == -1).all()
    assert int(out.trajectory[text].max()) < first.steps <= int(out.trajectory[speech].min())
    assert int(out.trajectory[speech].max()) < first.steps + second.steps


def test_hybrid_decode_checks_its_input():
    model = tiny_llada()
    canvas = hybrid_canvas()
    canvas.attention_mask = policy_mask("bidirectional", canvas.modality, canvas.valid)
    with pytest.raises(GenerationError, match="state before each target sees no later position"):
        hybrid_decode(model, canvas, ARDecodeOptions(), DecodeOptions(steps=2))
    done = hybrid_canvas()
    done.tokens = torch.where(done.tokens == MASK, 5, done.tokens)
    with pytest.raises(GenerationError, match="nothing to generate"):
        hybrid_decode(model, done, ARDecodeOptions(), DecodeOptions(steps=2))
    # speech-only canvases (TTS) skip the text phase; text-only ones (ASR) the speech phase
    speech_only = hybrid_canvas()
    speech_only.tokens = torch.where((speech_only.tokens == MASK) & (speech_only.modality == TX), 5, speech_only.tokens)
    assert hybrid_decode(model, speech_only, ARDecodeOptions(), DecodeOptions(steps=2)).forward_passes == 2
    text_only = hybrid_canvas()
    text_only.tokens = torch.where((text_only.tokens == MASK) & (text_only.modality == SC), 20, text_only.tokens)
    out = hybrid_decode(model, text_only, ARDecodeOptions(), DecodeOptions(steps=2))
    assert out.forward_passes == ar_decode(model, text_only).forward_passes


# --------------------------------------------------------------------------- end to end
LETTERS = "abcdef"
CHAR_TOKENIZER = Path(__file__).resolve().parent.parent / "configs" / "tiny" / "char_tokenizer.json"


def say_config(manifest, attention="hybrid", objective="hybrid"):
    """Task 'say': a text word -> its copy as text (target), then one speech unit per letter (target)."""
    return {
        "vocab": {"text_tokenizer": str(CHAR_TOKENIZER), "num_units": 8},
        "backbone": {"name": "llada", "preset": "tiny", "d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4,
                     "mlp_hidden_size": 128, "vocab_size": 120, "max_sequence_length": 32},
        "scheduler": "linear",
        "attention": attention,
        "objective": {"name": objective},
        "generation": {"mode": "hybrid", "steps": 4},
        "tasks": {"say": {"token": "<|t2t|>", "segments": [
            {"field": "src", "modality": "text", "role": "condition"},
            {"field": "dst", "modality": "text", "role": "target", "max_len": 3},
            {"field": "units", "modality": "speech", "role": "target", "max_len": 3}]}},
        "data": {"manifest": str(manifest), "batch_size": 32, "bucket_batches": 1},
        "train": {"seed": 0, "progress": False, "tensorboard": False, "log_every": 10, "checkpoint_every": 1000,
                  "eval_times": [0.3, 0.9], "weight_decay": 0.0,
                  "stages": [{"name": "main", "steps": 120, "lr": 3e-3, "warmup_steps": 5, "mixture": {"say": 1}}]},
    }


def say_rows(n: int = 200):
    rng = random.Random(0)
    words = ["".join(rng.choice(LETTERS) for _ in range(rng.randint(1, 3))) for _ in range(n)]
    return [
        {"id": f"s{i}", "split": "dev" if i % 10 == 9 else "train", "src": w, "dst": w, "units": [LETTERS.index(c) for c in w]}
        for i, w in enumerate(words)
    ]


def test_hybrid_training_learns_text_and_speech(tmp_path):
    rows = say_rows()
    manifest = tmp_path / "say.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConfigError, match=r"objective.name=hybrid .*attention.name='bidirectional'"):
        train(say_config(manifest, attention="bidirectional"), out=tmp_path / "bad")
    result = train(say_config(manifest), out=tmp_path / "run")
    losses = [result.losses[k] for k in sorted(result.losses)]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert result.dev and {"dev/loss_t0.3", "dev/loss_t0.9"} <= set(result.dev[-1])  # the speech targets' t
    assert result.dev[-1]["dev/loss_t0.3"] != result.dev[-1]["dev/loss_t0.9"]  # each t masks its own share of speech
    pipe = Pipeline(SpeechDiffusionModel.load(result.model_dir))
    dev = [r for r in rows if r["split"] == "dev"]
    outs = pipe.run_batch("say", [{"src": r["src"]} for r in dev], record_trajectory=True)
    text_ok = sum(o.fields["dst"] == r["dst"] for o, r in zip(outs, dev))
    units_ok = sum(o.fields["units"].tolist() == r["units"] for o, r in zip(outs, dev))
    # chance for either is below 1/36 (a right-length string over six letters)
    assert text_ok >= 0.5 * len(dev) and units_ok >= 0.3 * len(dev), (text_ok, units_ok, len(dev))
    assert all(not o.warnings for o in outs)
    o = outs[0]
    assert (o.trajectory[o.target] >= 0).all() and (o.trajectory[~o.target] == -1).all()
    with pytest.raises(ConfigError, match="generation.cfg_scale.*generation.mode=hybrid"):
        pipe.run("say", {"src": "ab"}, cfg_scale=1.0)
    # hybrid decoding checks the model's attention, and warns on a model trained otherwise
    bidir = Pipeline(SpeechDiffusionModel(say_config(manifest, attention="bidirectional")))
    with pytest.raises(ConfigError, match=r"generation.mode=hybrid .*attention.name='bidirectional'"):
        bidir.run("say", {"src": "ab"})
    assert "objective.name=diffusion" in Pipeline(SpeechDiffusionModel(say_config(manifest, objective="diffusion"))).run("say", {"src": "ab"}).warnings[0]
    note = pipe.run("say", {"src": "ab"}, mode="diffusion", steps=2).warnings
    assert note and "generation.mode=diffusion on a model trained with objective.name=hybrid" in note[0]
    assert "decode with generation.mode=hybrid" in note[0]
