"""The sampler engine: parity with LLaDA's generate(), schedules, ranges, early stop, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffuspeech.backbone import Backbone
from diffuspeech.compose import ConfigError, build_component
from diffuspeech.modality import MODALITY_CODE
from diffuspeech.sampling.generation import CanvasSpec, DecodeOptions, GenerationError, StepInfo, even_split_counts, generate

VOCAB = 48
MASK = 47
TEXT_HI = 32  # ids [0, 32) text, [32, 47) speech units, 47 mask
EOS = 5
EOT = 6


class TinyBackbone(Backbone):
    """Embedding + learned positions + one pre-norm attention/MLP block + untied head."""

    def __init__(self, vocab: int = VOCAB, dim: int = 32, max_len: int = 64, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.emb = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=gen) * (1.5 / math.sqrt(p.shape[-1]))
        self.head.bias.data[MASK] = -30.0  # a trained model never predicts [MASK]
        self._vocab, self._dim, self._max = vocab, dim, max_len
        self.nan = False

    @property
    def vocab_size(self) -> int:
        return self._vocab

    @property
    def hidden_size(self) -> int:
        return self._dim

    @property
    def max_seq_len(self) -> int:
        return self._max

    def hidden_states(self, input_ids, attention_mask=None):
        x = self.emb(input_ids) + self.pos(torch.arange(input_ids.shape[1]))[None]  # [B, L, D]
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        x = x + F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], attn_mask=attention_mask)[:, 0]
        x = x + self.mlp(x)
        x = self.norm(x)
        return x * float("nan") if self.nan else x

    def output_head(self):
        return self.head

    def resize_vocab(self, new_size: int, init: str = "mean") -> None:
        raise NotImplementedError


# ----------------------------------------------------------------- LLaDA reference (independent, loops as published)
def _ref_add_gumbel_noise(logits, temperature):
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    noise = torch.rand_like(logits, dtype=torch.float64)
    return logits.exp() / (-torch.log(noise)) ** temperature


def _ref_num_transfer(mask_index, steps):
    mask_num = mask_index.sum(dim=1, keepdim=True)
    out = torch.zeros(mask_num.size(0), steps, dtype=torch.int64) + mask_num // steps
    for i in range(mask_num.size(0)):
        out[i, : int(mask_num[i] % steps)] += 1
    return out


@torch.no_grad()
def llada_reference(model, prompt, steps, gen_length, block_length, temperature=0.0, cfg_scale=0.0,
                    remasking="low_confidence", mask_id=MASK, eos_id=EOS, eot_id=EOT, confidence_eos_eot_inf=False):
    """LLaDA's generate() algorithm: full-canvas logits, float64 Gumbel, full softmax, per-row top-k loop.
    Reproduces the published EOS-suppression line, which only affects EOS at temperature 0."""
    x = torch.full((prompt.shape[0], prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, : prompt.shape[1]] = prompt
    prompt_index = x != mask_id
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps = steps // num_blocks
    for nb in range(num_blocks):
        lo, hi = prompt.shape[1] + nb * block_length, prompt.shape[1] + (nb + 1) * block_length
        num_transfer = _ref_num_transfer(x[:, lo:hi] == mask_id, steps)
        for i in range(steps):
            mask_index = x == mask_id
            if cfg_scale > 0:
                un_x = x.clone()
                un_x[prompt_index] = mask_id
                logits, un_logits = torch.chunk(model(torch.cat([x, un_x])), 2, dim=0)
                logits = un_logits + (cfg_scale + 1) * (logits - un_logits)
            else:
                logits = model(x)
            logits_with_noise = _ref_add_gumbel_noise(logits, temperature)
            x0 = torch.argmax(logits_with_noise, dim=-1)
            if confidence_eos_eot_inf:
                logits_with_noise[:, :, eos_id] = logits[:, :, eot_id] = -torch.inf
            if remasking == "low_confidence":
                p = F.softmax(logits.to(torch.float64), dim=-1)
                x0_p = torch.gather(p, -1, x0[..., None]).squeeze(-1)
            elif remasking == "margin":  # top-1 minus top-2 probability (margin remasking)
                top = torch.topk(F.softmax(logits.to(torch.float64), dim=-1), 2, dim=-1).values
                x0_p = top[..., 0] - top[..., 1]
            elif remasking == "entropy":  # Dream's entropy remasking: the least uncertain first
                p = F.softmax(logits.to(torch.float64), dim=-1)
                x0_p = (p * torch.log(p.clamp_min(1e-300))).sum(dim=-1)  # = -entropy
            else:
                x0_p = torch.rand(x0.shape)
            x0_p[:, hi:] = -np.inf
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, torch.tensor(-np.inf, dtype=x0_p.dtype))
            transfer = torch.zeros_like(x0, dtype=torch.bool)
            for j in range(confidence.shape[0]):
                _, idx = torch.topk(confidence[j], k=int(num_transfer[j, i]))
                transfer[j, idx] = True
            x[transfer] = x0[transfer]
    return x


@pytest.fixture(scope="module")
def model():
    return TinyBackbone().eval()


def _canvas(prompt: torch.Tensor, gen_length: int) -> CanvasSpec:
    tokens = torch.cat([prompt, torch.full((prompt.shape[0], gen_length), MASK)], dim=1)
    return CanvasSpec(tokens=tokens, mask_id=MASK)


PROMPT = torch.tensor([[1, 9, 3, 17, 4, 22, 8, 11], [2, 30, 12, 7, 19, 25, 1, 14]])


# ----------------------------------------------------------------- parity
@pytest.mark.parametrize(
    "gen_length,steps,block_length,cfg",
    [(16, 16, 16, 0.0), (16, 6, 16, 0.0), (24, 12, 8, 0.0), (16, 8, 4, 1.5)],
)
def test_parity_with_llada_reference_at_temperature_zero(model, gen_length, steps, block_length, cfg):
    ref = llada_reference(model, PROMPT, steps, gen_length, block_length, cfg_scale=cfg)
    canvas = _canvas(PROMPT, gen_length)
    if cfg:
        canvas.condition = canvas.tokens != MASK
    opts = DecodeOptions(steps=steps, block_length=block_length, cfg_scale=cfg, record_trajectory=True)
    out = generate(model, canvas, opts, sampler="low_confidence")
    assert torch.equal(out.tokens, ref)
    assert out.steps == steps and out.forward_passes == steps * (2 if cfg else 1)
    assert out.num_blocks == gen_length // block_length
    # trajectory: -1 on the prompt, every target revealed once, blocks in order
    traj = out.trajectory
    assert (traj[:, :8] == -1).all() and (traj[:, 8:] >= 0).all()
    per_block = steps // out.num_blocks
    for b in range(out.num_blocks):
        seg = traj[:, 8 + b * block_length: 8 + (b + 1) * block_length]
        assert ((seg >= b * per_block) & (seg < (b + 1) * per_block)).all()
        # the even split (remainder first) is followed exactly
        expected = even_split_counts(torch.tensor([block_length]), per_block)[0]
        counts = torch.stack([(seg[0] == b * per_block + s).sum() for s in range(per_block)])
        assert torch.equal(counts, expected)


@pytest.mark.parametrize("strategy", ["margin", "entropy"])
@pytest.mark.parametrize("steps,block_length", [(16, 16), (12, 8)])
def test_margin_and_entropy_strategies_match_the_reference(model, strategy, steps, block_length):
    """The engine hands the strategy the kernel's margin / entropy; decoding matches a reference that
    computes them from the full float64 softmax."""
    ref = llada_reference(model, PROMPT, steps, 24 if block_length == 8 else 16, block_length, remasking=strategy)
    canvas = _canvas(PROMPT, ref.shape[1] - PROMPT.shape[1])
    out = generate(model, canvas, DecodeOptions(steps=steps, block_length=block_length), sampler=strategy)
    assert torch.equal(out.tokens, ref)


def test_even_split_counts():
    assert even_split_counts(torch.tensor([7, 2, 8]), 4).tolist() == [[2, 2, 2, 1], [1, 1, 0, 0], [2, 2, 2, 2]]


def test_parity_holds_per_row_in_a_batch_of_different_lengths(model):
    """Right padding: a short row gives the same tokens as when it is generated alone."""
    short, long_ = PROMPT[:1, :5], PROMPT[1:]
    alone = generate(model, _canvas(short, 8), DecodeOptions(steps=8)).tokens[0]
    ref = llada_reference(model, short, 8, 8, 8)[0]
    assert torch.equal(alone, ref)
    tokens = torch.full((2, 16), 0)
    valid = torch.zeros(2, 16, dtype=torch.bool)
    tokens[0, :13] = torch.cat([short[0], torch.full((8,), MASK)])
    valid[0, :13] = True
    tokens[1] = torch.cat([long_[0], torch.full((8,), MASK)])
    valid[1] = True
    out = generate(model, CanvasSpec(tokens=tokens, mask_id=MASK, valid=valid), DecodeOptions(steps=8))
    assert torch.equal(out.tokens[0, :13], alone)
    assert (out.tokens[0, 13:] == 0).all()  # padding untouched
    assert torch.equal(out.tokens[1], llada_reference(model, long_, 8, 8, 8)[0])


def test_random_and_threshold_strategies_fill_everything(model):
    canvas = _canvas(PROMPT, 16)
    for node in ("random", {"name": "threshold", "threshold": 0.5}, {"name": "threshold", "factor": 1.0}):
        out = generate(model, canvas, DecodeOptions(steps=16, seed=3, record_trajectory=True), sampler=node)
        assert (out.tokens != MASK).all()
        assert (out.trajectory[:, 8:] >= 0).all()
    thr = generate(model, canvas, DecodeOptions(steps=16), sampler={"name": "threshold", "threshold": 0.0})
    assert thr.steps == 1  # everything is above a zero threshold: one step


def test_temperature_sampling_is_seeded(model):
    canvas = _canvas(PROMPT, 16)
    a = generate(model, canvas, DecodeOptions(steps=8, temperature=1.0, seed=7)).tokens
    b = generate(model, canvas, DecodeOptions(steps=8, temperature=1.0, seed=7)).tokens
    c = generate(model, canvas, DecodeOptions(steps=8, temperature=1.0, seed=8)).tokens
    assert torch.equal(a, b) and not torch.equal(a, c)


# ----------------------------------------------------------------- schedules, ranges, early stop
def _thinking_answer_canvas():
    """[prompt 4] [thinking: 8 text masks] [answer: 12 speech masks], two rows."""
    b, lt, ls = 2, 8, 12
    tokens = torch.cat([PROMPT[:, :4], torch.full((b, lt + ls), MASK)], dim=1)
    modality = torch.zeros_like(tokens)
    modality[:, 4 + lt:] = MODALITY_CODE["speech"]
    segment = torch.full_like(tokens, -1)
    segment[:, 4: 4 + lt] = 0
    segment[:, 4 + lt:] = 1
    lo = torch.where(modality == MODALITY_CODE["speech"], TEXT_HI, 0)
    hi = torch.where(modality == MODALITY_CODE["speech"], MASK, TEXT_HI)
    return CanvasSpec(tokens=tokens, mask_id=MASK, modality=modality, segment=segment, allowed_lo=lo, allowed_hi=hi)


def test_forbidden_ids_are_never_chosen_and_thinking_comes_first(model):
    canvas = _thinking_answer_canvas()
    scheduler = build_component("schedulers", {"name": "per_modality", "text": "linear", "speech": "linear",
                                               "speech_delay": 0.5})
    steps = 8
    out = generate(model, canvas, DecodeOptions(steps=steps, temperature=1.0, seed=0, record_trajectory=True),
                   sampler="low_confidence", scheduler=scheduler)
    text, speech = out.tokens[:, 4:12], out.tokens[:, 12:]
    assert ((text >= 0) & (text < TEXT_HI)).all()
    assert ((speech >= TEXT_HI) & (speech < MASK)).all()
    # reveal order follows each modality's own plan
    text_plan = scheduler.reveal_counts(torch.tensor([8]), steps, "text")[0]
    speech_plan = scheduler.reveal_counts(torch.tensor([12]), steps, "speech")[0]
    assert speech_plan[: steps // 2].sum() == 0  # speech held back during the first half
    for s in range(steps):
        assert ((out.trajectory[:, 4:12] == s).sum(dim=1) == text_plan[s]).all()
        assert ((out.trajectory[:, 12:] == s).sum(dim=1) == speech_plan[s]).all()
    # the threshold strategy may not jump the speech schedule either
    thr = generate(model, canvas, DecodeOptions(steps=steps, record_trajectory=True),
                   sampler={"name": "threshold", "threshold": 0.0}, scheduler=scheduler)
    assert (thr.trajectory[:, 12:] >= steps // 2).all()
    assert (thr.tokens != MASK).all()


def test_early_stop_fills_the_segment_after_its_end_token(model):
    canvas = _canvas(PROMPT, 16)
    free = generate(model, canvas, DecodeOptions(steps=16, record_trajectory=True))
    # per row, declare as "end id" the token the free run committed at generated position 5
    end = free.tokens[:, 8 + 5]  # [B]
    canvas.segment_end_id = end[:, None]  # [B, S=1]
    canvas.segment_fill_id = torch.tensor([0])
    calls: list[StepInfo] = []
    out = generate(model, canvas, DecodeOptions(steps=16, record_trajectory=True), on_step=calls.append)
    for row in range(2):
        gen, traj = out.tokens[row, 8:], out.trajectory[row, 8:]
        first = int((gen == end[row]).nonzero()[0])
        assert (gen[first + 1:] == 0).all() and first < 15  # filled after the end token
        assert (traj[first + 1:] == traj[first]).all()  # at the step the end token was committed
        assert (gen != MASK).all()
    assert out.steps < 16 and len(calls) == out.steps and calls[-1].masked == 0
    assert out.forward_passes == out.steps
    assert [c.step for c in calls] == list(range(1, out.steps + 1))


def test_defer_ids_fix_llada_eos_suppression():
    """LLaDA's confidence_eos_eot_inf leaves EOS confidence untouched at temperature > 0 (the
    reference reveals a confident EOS first); defer_ids reveals such candidates last."""
    eager = TinyBackbone(seed=1).eval()
    eager.head.bias.data[EOS] += 2.0  # EOS is a confident candidate at many positions
    prompt = PROMPT[:1]
    torch.manual_seed(0)
    ref = llada_reference(eager, prompt, 16, 16, 16, temperature=0.5, confidence_eos_eot_inf=True)
    assert (ref[0, 8:] == EOS).sum() >= 8  # EOS flooding: the suppression line did nothing at T > 0
    plain = generate(eager, _canvas(prompt, 16), DecodeOptions(steps=16, temperature=0.5, seed=0, record_trajectory=True))
    assert (plain.tokens[0, 8:][plain.trajectory[0, 8:] == 0] == EOS).all()  # a confident EOS goes first
    opts = DecodeOptions(steps=16, temperature=0.5, seed=0, record_trajectory=True, defer_ids=[EOS, EOT])
    fixed = generate(eager, _canvas(prompt, 16), opts)
    assert (fixed.tokens[0, 8:][fixed.trajectory[0, 8:] == 0] != EOS).all()
    assert (fixed.tokens[0, 8:] == EOS).sum() * 2 < (plain.tokens[0, 8:] == EOS).sum()


# ----------------------------------------------------------------- bad input
def test_bad_input_gives_clear_errors(model):
    canvas = _canvas(PROMPT, 16)
    with pytest.raises(GenerationError, match="steps must be a positive integer"):
        generate(model, canvas, DecodeOptions(steps=0))
    with pytest.raises(GenerationError, match="exceeds the number of tokens to generate"):
        generate(model, canvas, DecodeOptions(steps=17))
    with pytest.raises(GenerationError, match="temperature must be >= 0"):
        generate(model, canvas, DecodeOptions(steps=4, temperature=-0.1))
    with pytest.raises(GenerationError, match="multiple of the number of blocks"):
        generate(model, canvas, DecodeOptions(steps=6, block_length=4))
    with pytest.raises(ConfigError, match="unknown sampler name 'low_confidance'.*Did you mean 'low_confidence'"):
        generate(model, canvas, DecodeOptions(steps=4), sampler="low_confidance")
    long_canvas = _canvas(torch.zeros(1, 60, dtype=torch.long), 8)
    with pytest.raises(GenerationError, match="exceeds the backbone's max_seq_len 64"):
        generate(model, long_canvas, DecodeOptions(steps=4))
    with pytest.raises(GenerationError, match="nothing to generate"):
        generate(model, CanvasSpec(tokens=PROMPT, mask_id=MASK), DecodeOptions(steps=1))
    bad_range = _canvas(PROMPT, 16)
    bad_range.allowed_lo = torch.full_like(bad_range.tokens, 10)
    bad_range.allowed_hi = torch.full_like(bad_range.tokens, 10)
    with pytest.raises(GenerationError, match=r"allowed id range \[10, 10\)"):
        generate(model, bad_range, DecodeOptions(steps=4))


def test_nan_logits_are_reported(model):
    model.nan = True
    try:
        with pytest.raises(GenerationError, match="non-finite logits at step 1"):
            generate(model, _canvas(PROMPT, 16), DecodeOptions(steps=4))
    finally:
        model.nan = False


def test_parity_with_llada_reference_on_the_llada_backbone():
    """Same parity on the real `llada` backbone (shrunk tiny preset, random weights)."""
    from diffuspeech.registry import get_registry

    if "llada" not in get_registry().names("backbones"):
        pytest.skip("llada backbone not available")
    llada = build_component("backbones", {"name": "llada", "preset": "tiny", "d_model": 64, "n_layers": 2,
                                          "n_heads": 2, "n_kv_heads": 2, "mlp_hidden_size": 128, "vocab_size": 96,
                                          "max_sequence_length": 64, "init_std": 0.3, "seed": 0}).eval()
    mask = 95

    def model(x):  # a trained model never predicts [MASK]; our engine bans it outright
        return llada(x).masked_fill(torch.arange(96) == mask, -1e4)

    prompt = PROMPT % 90
    ref = llada_reference(model, prompt, 8, 16, 8, mask_id=mask)
    tokens = torch.cat([prompt, torch.full((2, 16), mask)], dim=1)
    out = generate(llada, CanvasSpec(tokens=tokens, mask_id=mask), DecodeOptions(steps=8, block_length=8))
    assert torch.equal(out.tokens, ref)
