"""The hierarchical_block noiser (VocalNet-MDM) against a per-example reference, and its distribution."""

from __future__ import annotations

import math

import pytest
import torch

from diffuspeech import build_component


def reference(target, block_size, block_ratio, in_block_ratio, generator):
    """Row by row, the same draws in the same order: r_block [B], r_in [B], u [B, L]."""
    b, length = target.shape
    r_block = block_ratio[0] + (block_ratio[1] - block_ratio[0]) * torch.rand(b, generator=generator)
    r_in = in_block_ratio[0] + (in_block_ratio[1] - in_block_ratio[0]) * torch.rand(b, generator=generator)
    u = torch.rand((b, length), generator=generator)
    masked = torch.zeros_like(target)
    p_mask = torch.ones(b, length)
    for row in range(b):
        positions = [i for i in range(length) if target[row, i]]
        blocks = [positions[k:k + block_size] for k in range(0, len(positions), block_size)]
        if not blocks:
            continue
        current = min(math.floor((1 - float(r_block[row])) * len(blocks)), len(blocks) - 1)
        for later in blocks[current + 1:]:
            masked[row, later] = True
        hit = [i for i in blocks[current] if u[row, i] < r_in[row]]
        for i in hit or blocks[current][:1]:
            masked[row, i] = True
        p_mask[row, blocks[current]] = r_in[row]
    return masked, p_mask


def batch():
    target = torch.zeros(4, 40, dtype=torch.bool)
    target[0, 5:40] = True  # 35 targets: 3 blocks of 16 (the last one short)
    target[1, 2:12] = target[1, 20:30] = True  # two target segments with a condition between
    target[2, 10:11] = True  # a single target
    return target  # row 3: no target at all


@pytest.mark.parametrize("seed", range(5))
def test_matches_the_per_example_reference(seed):
    noiser = build_component("noisers", {"name": "hierarchical_block", "block_size": 16})
    target = batch()
    modality = torch.zeros_like(target, dtype=torch.long)
    masked, p_mask = noiser(target, modality, torch.full((4,), 0.5), None, torch.Generator().manual_seed(seed))
    ref_masked, ref_p = reference(target, 16, (0.5, 1.0), (0.3, 1.0), torch.Generator().manual_seed(seed))
    assert torch.equal(masked, ref_masked)
    torch.testing.assert_close(p_mask[masked], ref_p[masked])


def test_blocks_before_the_current_one_stay_clean_and_later_ones_are_masked():
    noiser = build_component("noisers", {"name": "hierarchical_block", "block_size": 4, "block_ratio": [0.2, 0.6]})
    target = torch.zeros(1, 24, dtype=torch.bool)
    target[0, 4:24] = True  # 5 blocks of 4
    gen = torch.Generator().manual_seed(0)
    currents = []
    for _ in range(500):
        masked, p_mask = noiser(target, torch.zeros(1, 24, dtype=torch.long), torch.ones(1), None, gen)
        blocks = masked[0, 4:].reshape(5, 4)
        full = [i for i in range(5) if blocks[i].all()]
        clean = [i for i in range(5) if not blocks[i].any()]
        current = min(set(range(5)) - set(clean))
        assert all(i < current for i in clean) and all(i > current for i in full if i != current)
        assert bool((p_mask[0, 4 + 4 * current: 8 + 4 * current] < 1).all())  # the current block's weight is 1 / r_in
        assert not masked[0, :4].any()  # conditions never masked
        currents.append(current)
    # r_block in [0.2, 0.6]: the current block is floor((1 - r) * 5) with (1 - r) * 5 in [2, 4): block 2 or 3
    assert set(currents) == {2, 3}


def test_bad_ranges_name_the_key():
    from diffuspeech.compose import ConfigError

    with pytest.raises(ConfigError, match=r"noiser.in_block_ratio: expected \[low, high\]"):
        build_component("noisers", {"name": "hierarchical_block", "in_block_ratio": [0.9, 0.1]})
