"""Attention policies against explicit, hand-written masks."""

from __future__ import annotations

import pytest
import torch

from diffuspeech import build_component
from diffuspeech.modality import MODALITY_CODE
from diffuspeech.testing import check_component

T, S, X = MODALITY_CODE["text"], MODALITY_CODE["speech"], MODALITY_CODE["special"]


def grid(rows: list[str]) -> torch.Tensor:
    """['10', '11'] -> [[True, False], [True, True]]."""
    return torch.tensor([[c == "1" for c in r] for r in rows])


def run(policy: str, modality: list[list[int]], valid: list[list[int]], **settings) -> torch.Tensor:
    pol = build_component("attention", {"name": policy, **settings})
    out = pol.mask(torch.tensor(modality), torch.tensor(valid, dtype=torch.bool))
    assert out.dtype == torch.bool and out.shape == (len(modality), 1, len(modality[0]), len(modality[0]))
    assert out.any(-1).all(), "no query row may be all False"
    return out[:, 0]


def test_bidirectional_with_padding():
    got = run("bidirectional", [[T, S, S, X]], [[1, 1, 1, 0]])
    assert torch.equal(got[0], grid(["1110", "1110", "1110", "0001"]))


def test_causal_with_right_padding():
    got = run("causal", [[T, T, S, S]], [[1, 1, 1, 0]])
    assert torch.equal(got[0], grid(["1000", "1100", "1110", "0001"]))


def test_block_causal_blocks_of_two_and_left_padding():
    got = run("block_causal", [[T] * 5, [T] * 5], [[1] * 5, [0, 1, 1, 1, 1]], block_size=2)
    assert torch.equal(got[0], grid(["11000", "11000", "11110", "11110", "11111"]))
    assert torch.equal(got[1], grid(["10000", "01000", "01110", "01110", "01111"]))


def test_block_causal_block_one_is_causal_and_huge_block_is_bidirectional():
    mod, val = [[T, S, S, T, X]], [[1] * 5]
    assert torch.equal(run("block_causal", mod, val, block_size=1), run("causal", mod, val))
    assert torch.equal(run("block_causal", mod, val, block_size=64), run("bidirectional", mod, val))


def test_block_causal_rejects_bad_block_size():
    with pytest.raises(ValueError, match="block_size"):
        build_component("attention", {"name": "block_causal", "block_size": 0})


def test_hybrid_text_causal_speech_spans_bidirectional():
    got = run(
        "hybrid",
        [[T, S, S, T, S, X], [S, S, T, S, S, S]],
        [[1] * 6, [1, 1, 1, 1, 0, 0]],
    )
    assert torch.equal(
        got[0],
        grid(["100000", "111000", "111000", "111100", "111110", "111111"]),
    )
    # speech codes on padding never extend a span; padding rows see only themselves
    assert torch.equal(
        got[1],
        grid(["110000", "110000", "111000", "111100", "000010", "000001"]),
    )


def test_hybrid_all_text_is_causal_all_speech_is_bidirectional():
    val = [[1] * 4]
    assert torch.equal(run("hybrid", [[T] * 4], val), run("causal", [[T] * 4], val))
    assert torch.equal(run("hybrid", [[S] * 4], val), run("bidirectional", [[S] * 4], val))


def test_masks_work_with_sdpa_without_nan():
    pol = build_component("attention", {"name": "hybrid"})
    modality = torch.tensor([[T, S, S, T]])
    mask = pol.mask(modality, torch.tensor([[True, True, True, False]]))
    q = torch.randn(1, 2, 4, 8)
    out = torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    assert torch.isfinite(out).all()


def test_bad_shapes_are_explained():
    pol = build_component("attention", {"name": "causal"})
    with pytest.raises(ValueError, match=r"\[batch, length\]"):
        pol.mask(torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.bool))


# --------------------------------------------------------------------------- blocks aligned with the decode blocks
def test_target_aligned_blocks_count_from_the_first_target():
    from diffuspeech.attention import policy_mask

    policy = build_component("attention", {"name": "block_causal", "block_size": 2, "align": "target"})
    modality = torch.zeros(1, 7, dtype=torch.long)
    valid = torch.ones(1, 7, dtype=torch.bool)
    target = torch.tensor([[False, False, False, True, True, True, True]])  # 3 conditions, then 2 blocks of 2
    mask = policy_mask(policy, modality, valid, target)[0, 0]
    assert mask[:3, :3].all() and not mask[:3, 3:].any()  # conditions see conditions only
    assert mask[3:, :3].all()  # every target sees every condition
    assert mask[3, 4] and not mask[3, 5] and mask[5, 3] and mask[6, 5]  # bidirectional in a block, causal across
    with pytest.raises(ValueError, match="needs the target positions"):
        policy_mask(policy, modality, valid)
    check_component("attention", policy)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_kv_cache_is_exact_under_target_aligned_blocks(mode):
    from diffuspeech.attention import policy_mask
    from diffuspeech.sampling.generation import CanvasSpec, generate
    from diffuspeech.sampling.options import DecodeOptions

    backbone = build_component("backbones", {"name": "llada", "preset": "tiny", "d_model": 32, "n_layers": 2, "n_heads": 2,
                                             "n_kv_heads": 2, "mlp_hidden_size": 64, "vocab_size": 64, "seed": 0}).eval()
    mask_id = 63
    prompt = torch.randint(0, mask_id, (2, 5), generator=torch.Generator().manual_seed(0))  # 5 conditions: not a multiple of 4
    tokens = torch.cat([prompt, torch.full((2, 12), mask_id)], dim=1)
    target = tokens == mask_id
    policy = build_component("attention", {"name": "block_causal", "block_size": 4, "align": "target"})
    attn = policy_mask(policy, torch.zeros_like(tokens), torch.ones_like(target), target)

    def run(kv):
        canvas = CanvasSpec(tokens=tokens.clone(), mask_id=mask_id, attention_mask=attn)
        return generate(backbone, canvas, DecodeOptions(steps=9, block_length=4, kv_cache=kv))

    full, cached = run("none"), run(mode)
    assert torch.equal(full.tokens, cached.tokens)
    assert cached.cached_forwards > 0
