"""The autoregressive baseline: shifted next-token loss, left-to-right decoding, config checks, a tiny run.

References are written here from scratch: the loss as plain shifted cross-entropy over full
``[B, L, V]`` logits, the decoder as a per-row loop of full forwards over one sequence.
"""

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from diffuspeech.attention import check_causal_policy
from diffuspeech.compose import ConfigError, build_component
from diffuspeech.model import SpeechDiffusionModel
from diffuspeech.objective import ObjectiveContext, build_objective
from diffuspeech.pipeline import Pipeline
from diffuspeech.plugins.objectives.autoregressive import AutoregressiveObjective
from diffuspeech.sampling.autoregressive import ARDecodeOptions, ar_decode
from diffuspeech.sampling.generation import CanvasSpec, GenerationError
from diffuspeech.training.trainer import train

V = 48
MASK = V - 1


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: exact, reproducible float order


def tiny_llada(vocab: int = V, seed: int = 0):
    node = {"name": "llada", "preset": "tiny", "d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 2,
            "mlp_hidden_size": 64, "vocab_size": vocab, "max_sequence_length": 64, "seed": seed}
    return build_component("backbones", node, "backbone").eval()


def causal_mask(valid: torch.Tensor) -> torch.Tensor:
    return build_component("attention", "causal", "attention").mask(torch.zeros_like(valid, dtype=torch.long), valid)


def context(policy_name: str = "?") -> ObjectiveContext:
    return ObjectiveContext(build_component("schedulers", "linear"), build_component("noisers", "iid"), MASK, None, policy_name)


# --------------------------------------------------------------------------- loss
def reference_ar_loss(model, ids, target, mask, normalize):
    logits = model(ids, mask)  # [B, L, V]
    per_row, counts = [], []
    for b in range(ids.shape[0]):
        terms = [F.cross_entropy(logits[b, i - 1], ids[b, i]) for i in range(ids.shape[1]) if target[b, i]]
        per_row.append(torch.stack(terms).sum())
        counts.append(len(terms))
    if normalize == "token":
        return torch.stack(per_row).sum() / sum(counts)
    return torch.stack([s / n for s, n in zip(per_row, counts)]).mean()


@pytest.mark.parametrize("normalize,logits_on", [("token", "masked"), ("sequence", "masked"), ("token", "all")])
def test_ar_loss_and_gradients_match_shifted_cross_entropy(normalize, logits_on):
    model = tiny_llada()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V - 1, (3, 14), generator=g)  # [B, L]
    valid = torch.ones_like(ids, dtype=torch.bool)
    valid[1, 10:] = False  # a padded row
    starts, ends = torch.tensor([4, 3, 6]), torch.tensor([14, 10, 12])
    pos = torch.arange(14)[None, :]
    target = (pos >= starts[:, None]) & (pos < ends[:, None])  # [B, L] condition prefix, target span, (row 2) fixed tail
    mask = causal_mask(valid)
    model.zero_grad()
    ref = reference_ar_loss(model, ids, target, mask, normalize)
    ref.backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    batch = {"ids": ids, "modality": torch.zeros_like(ids), "target": target, "valid": valid}
    objective = build_objective({"name": "autoregressive", "normalize": normalize, "logits_on": logits_on}, context("causal"))
    out = objective.loss(model, batch, None, mask)
    out.loss.backward()
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip((p.grad for p in model.parameters()), ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert out.num_target == int(target.sum())


# --------------------------------------------------------------------------- decoding
def reference_greedy(model, canvas: CanvasSpec):
    """One row at a time, one full forward per token over that row alone; early stop per segment."""
    tokens = canvas.tokens.clone()
    passes = []
    for b in range(tokens.shape[0]):
        row, valid = tokens[b : b + 1, : int(canvas.valid[b].sum())], canvas.valid[b]
        n = row.shape[1]
        mask = canvas.attention_mask[b : b + 1, :, :n, :n]
        ended, count = set(), 0
        for p in range(n):
            if row[0, p] != MASK:
                continue
            seg = int(canvas.segment[b, p])
            end = int(canvas.segment_end_id[seg])
            if seg in ended:
                row[0, p] = end
                continue
            logits = model(row, mask)[0, p - 1]  # [V]
            count += 1
            allowed = torch.full((V,), float("-inf"))
            allowed[int(canvas.allowed_lo[b, p]) : int(canvas.allowed_hi[b, p])] = 0.0
            allowed[MASK] = float("-inf")
            row[0, p] = int(torch.argmax(logits + allowed))
            if int(row[0, p]) == end:
                ended.add(seg)
        tokens[b, :n] = row[0]
        assert bool(valid[:n].all())
        passes.append(count)
    return tokens, max(passes)


def make_canvas(cond_lengths=(3, 6, 4), seg_lengths=(5, 7), seed=0) -> CanvasSpec:
    """Rows: [cond..., start0, masks (segment 0, ids 0..9, end 9), start1, masks (segment 1, ids 10..46, end 10)], right-padded."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for c in cond_lengths:
        ids = torch.randint(0, 40, (c,), generator=g).tolist() + [44]
        seg = [-1] * (c + 1)
        lo, hi = [0] * (c + 1), [V] * (c + 1)
        for s, (n, (a, z)) in enumerate(zip(seg_lengths, [(0, 10), (10, V - 1)])):
            ids += [MASK] * n + ([45] if s == 0 else [])
            seg += [s] * n + ([-1] if s == 0 else [])
            lo += [a] * n + ([0] if s == 0 else [])
            hi += [z] * n + ([V] if s == 0 else [])
        rows.append((ids, seg, lo, hi))
    length = max(len(r[0]) for r in rows)
    pad = lambda x, v: x + [v] * (length - len(x))  # noqa: E731
    tokens = torch.tensor([pad(r[0], 46) for r in rows])
    valid = torch.tensor([pad([True] * len(r[0]), False) for r in rows])
    return CanvasSpec(
        tokens=tokens, mask_id=MASK, valid=valid,
        segment=torch.tensor([pad(r[1], -1) for r in rows]),
        allowed_lo=torch.tensor([pad(r[2], 0) for r in rows]), allowed_hi=torch.tensor([pad(r[3], V) for r in rows]),
        segment_end_id=torch.tensor([9, 10]), attention_mask=causal_mask(valid),
    )


@pytest.mark.parametrize("kv_cache", [False, True])
def test_ar_decode_equals_naive_greedy_loop(kv_cache):
    model = tiny_llada()
    with torch.no_grad():  # make the end ids likely enough that some segments stop early
        model.output_head().weight[9] += 0.6 * model.output_head().weight.std() * torch.randn(32, generator=torch.Generator().manual_seed(3))
    canvas = make_canvas()
    ref, ref_passes = reference_greedy(model, canvas)
    out = ar_decode(model, canvas, ARDecodeOptions(kv_cache=kv_cache, record_trajectory=True))
    assert torch.equal(out.tokens, ref)
    assert out.forward_passes == out.steps == ref_passes
    assert out.cached_forwards == (ref_passes - 1 if kv_cache else 0)
    target = canvas.tokens == MASK
    stopped = target & (out.trajectory >= 0) & (out.tokens == 9) & (canvas.segment == 0)
    assert int(stopped.sum()) > 1, "the test canvas should exercise early stop"
    # left to right: trajectory never decreases along a row's targets; fixed positions stay -1
    assert (out.trajectory[~target] == -1).all()
    for b in range(target.shape[0]):
        steps = out.trajectory[b][target[b]]
        assert (steps[1:] >= steps[:-1]).all() and steps[0] == 0


def test_ar_decode_sampling_is_seeded_and_in_range():
    model = tiny_llada()
    canvas = make_canvas(seed=1)
    a = ar_decode(model, canvas, ARDecodeOptions(temperature=1.0, seed=5)).tokens
    b = ar_decode(model, canvas, ARDecodeOptions(temperature=1.0, seed=5)).tokens
    c = ar_decode(model, canvas, ARDecodeOptions(temperature=1.0, seed=6)).tokens
    assert torch.equal(a, b) and not torch.equal(a, c)
    t = canvas.tokens == MASK
    assert ((a[t] >= canvas.allowed_lo[t]) & (a[t] < canvas.allowed_hi[t])).all() and not (a == MASK).any()


def test_ar_decode_rejects_a_non_causal_mask():
    canvas = make_canvas()
    canvas.attention_mask = build_component("attention", "bidirectional", "attention").mask(
        torch.zeros_like(canvas.tokens), canvas.valid
    )
    with pytest.raises(GenerationError, match="attention.name=causal"):
        ar_decode(tiny_llada(), canvas)


# --------------------------------------------------------------------------- config checks
def test_autoregressive_objective_needs_a_causal_policy():
    sched, noiser = build_component("schedulers", "linear"), build_component("noisers", "iid")
    for name in ("bidirectional", "hybrid", {"name": "block_causal", "block_size": 4}):
        policy = build_component("attention", name, "attention")
        label = name if isinstance(name, str) else name["name"]
        with pytest.raises(ConfigError, match=rf"objective.name=autoregressive.*attention.name='{label}'"):
            build_objective("autoregressive", ObjectiveContext(sched, noiser, MASK, policy, label))
    for name in ("causal", {"name": "block_causal", "block_size": 1}):
        check_causal_policy(build_component("attention", name, "attention"), str(name))
    built = build_objective("autoregressive", ObjectiveContext(sched, noiser, MASK, build_component("attention", "causal"), "causal"))
    assert isinstance(built, AutoregressiveObjective)
    with pytest.raises(ConfigError, match="objective.name: unknown objective name 'ar'; registered objectives: autoregressive, diffusion"):
        build_objective("ar", ObjectiveContext(sched, noiser, MASK))
    # the objective also checks the mask it is given
    ids = torch.randint(0, 40, (2, 8))
    batch = {"ids": ids, "modality": torch.zeros_like(ids), "target": ids > 20, "valid": torch.ones_like(ids, dtype=torch.bool)}
    batch["target"][:, 0] = False
    with pytest.raises(ConfigError, match="attention.name='x'"):
        build_objective("autoregressive", ObjectiveContext(sched, noiser, MASK, None, "x")).loss(tiny_llada(), batch, None, None)


# --------------------------------------------------------------------------- end to end
LETTERS = "abcdef"


def copy_config(manifest, attention="causal"):
    return {
        "vocab": {"text_tokenizer": str(CHAR_TOKENIZER), "num_units": 4},
        "backbone": {"name": "llada", "preset": "tiny", "d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4,
                     "mlp_hidden_size": 128, "vocab_size": 112, "max_sequence_length": 32},
        "scheduler": "linear",
        "attention": attention,
        "objective": {"name": "autoregressive"},
        "generation": {"mode": "autoregressive"},
        "tasks": {"copy": {"token": "<|t2t|>", "segments": [
            {"field": "src", "modality": "text", "role": "condition"},
            {"field": "dst", "modality": "text", "role": "target", "max_len": 3}]}},
        "data": {"manifest": str(manifest), "batch_size": 32, "bucket_batches": 1},
        "train": {"seed": 0, "progress": False, "tensorboard": False, "log_every": 10, "checkpoint_every": 1000,
                  "eval_times": [0.25, 0.5], "weight_decay": 0.0,
                  "stages": [{"name": "main", "steps": 70, "lr": 3e-3, "warmup_steps": 5, "mixture": {"copy": 1}}]},
    }


CHAR_TOKENIZER = Path(__file__).resolve().parent.parent / "configs" / "tiny" / "char_tokenizer.json"


def copy_rows(n: int = 200):
    rng = random.Random(0)
    words = ["".join(rng.choice(LETTERS) for _ in range(rng.randint(1, 3))) for _ in range(n)]
    return [{"id": f"c{i}", "split": "dev" if i % 10 == 9 else "train", "src": w, "dst": w} for i, w in enumerate(words)]


def test_ar_training_learns_to_copy(tmp_path):
    rows = copy_rows()
    manifest = tmp_path / "copy.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConfigError, match=r"objective.name=autoregressive needs a causal attention policy, but attention.name='bidirectional'"):
        train(copy_config(manifest, attention="bidirectional"), out=tmp_path / "bad")
    result = train(copy_config(manifest), out=tmp_path / "run")
    losses = [result.losses[k] for k in sorted(result.losses)]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert result.dev and result.dev[-1]["dev/loss"] < losses[0]
    assert "dev/loss_t0.5" not in result.dev[-1]  # no t in the AR loss: evaluated once, not per eval_times
    pipe = Pipeline(SpeechDiffusionModel.load(result.model_dir))
    dev = [r for r in rows if r["split"] == "dev"]
    outs = pipe.run_batch("copy", [{"src": r["src"]} for r in dev], record_trajectory=True)
    correct = sum(o.fields["dst"] == r["dst"] for o, r in zip(outs, dev))
    # chance (a right-length string of the six letters) is below 1/36
    assert correct >= 0.5 * len(dev), [(o.fields["dst"], r["dst"]) for o, r in zip(outs, dev)]
    assert all(not o.warnings for o in outs)
    o = outs[0]
    assert o.forward_passes <= 4 and (o.trajectory[o.target] >= 0).all() and (o.trajectory[~o.target] == -1).all()
    # diffusion decoding of the same model still runs (a different decoder; no quality claim)
    assert pipe.run("copy", {"src": "ab"}, mode="diffusion", steps=2).forward_passes == 2
    with pytest.raises(ConfigError, match="generation.mode: 'greedy'"):
        pipe.run("copy", {"src": "ab"}, mode="greedy")
    # AR decoding checks the model's attention policy, and warns on a diffusion-trained model
    bidir = Pipeline(SpeechDiffusionModel(copy_config(manifest, attention="bidirectional")))
    with pytest.raises(ConfigError, match=r"generation.mode=autoregressive needs a causal attention policy, but attention.name='bidirectional'"):
        bidir.run("copy", {"src": "ab"})
    cfg = copy_config(manifest)
    cfg["objective"]["name"] = "diffusion"
    assert "objective.name=diffusion" in Pipeline(SpeechDiffusionModel(cfg)).run("copy", {"src": "ab"}).warnings[0]
