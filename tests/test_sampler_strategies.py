"""Decoding strategies (``samplers`` plugins): pure tensor behaviour, batched, no per-row loop."""

from __future__ import annotations

import pytest
import torch

from diffuspeech.compose import ConfigError, build_component
from diffuspeech.registry import get_registry
from diffuspeech.sampler import topk_mask

INF = float("-inf")
CONF = torch.tensor(
    [
        [0.95, 0.20, INF, 0.91, 0.50],
        [0.10, 0.30, 0.20, INF, INF],
        [INF, INF, INF, INF, INF],
    ]
)


def test_builtins_are_registered():
    assert {"low_confidence", "random", "threshold"} <= set(get_registry().names("samplers"))


def test_topk_mask_per_row_k_skips_ineligible():
    k = torch.tensor([2, 5, 3])
    sel = topk_mask(CONF, k)
    assert sel.tolist() == [
        [True, False, False, True, False],
        [True, True, True, False, False],  # only 3 eligible although k = 5
        [False] * 5,
    ]


def test_low_confidence_takes_the_most_confident():
    s = build_component("samplers", "low_confidence")
    sel = s.select(CONF, torch.tensor([1, 2, 1]))
    assert sel.tolist()[0] == [True, False, False, False, False]
    assert sel.tolist()[1] == [False, True, True, False, False]
    assert not sel[2].any()
    assert not s.select(CONF, torch.tensor([0, 0, 0])).any()


def test_random_is_uniform_over_eligible_and_seeded():
    s = build_component("samplers", "random")
    conf = torch.tensor([[0.9, 0.1, INF, 0.5]]).expand(3000, -1)
    sel = s.select(conf, torch.ones(3000, dtype=torch.long), torch.Generator().manual_seed(0))
    assert (sel.sum(dim=1) == 1).all() and not sel[:, 2].any()
    freq = sel.double().mean(dim=0)
    assert ((freq[[0, 1, 3]] - 1 / 3).abs() < 0.04).all()  # confidence values are ignored
    again = s.select(conf, torch.ones(3000, dtype=torch.long), torch.Generator().manual_seed(0))
    assert torch.equal(sel, again)


def test_threshold_reveals_all_confident_and_at_least_one():
    s = build_component("samplers", {"name": "threshold", "threshold": 0.9})
    sel = s.select(CONF, torch.zeros(3, dtype=torch.long))
    assert sel.tolist()[0] == [True, False, False, True, False]  # 0.95 and 0.91 pass tau
    assert sel.tolist()[1] == [False, True, False, False, False]  # none pass: the best one
    assert not sel[2].any()  # nothing eligible
    more = s.select(CONF, torch.tensor([3, 0, 0]))  # the schedule's count is a floor
    assert more[0].sum() == 3


def test_threshold_factor_rule():
    # sorted: 0.95, 0.91, 0.5, 0.2 ; factor 0.2: thresholds 1 - 0.2/(n+1) = 0.9, 0.933, ...
    s = build_component("samplers", {"name": "threshold", "factor": 0.2})
    assert s.select(CONF[:1], torch.zeros(1, dtype=torch.long)).sum() == 1  # 0.91 < 0.933
    loose = build_component("samplers", {"name": "threshold", "factor": 2.5})  # -0.25, 0.17, 0.375, 0.5
    assert loose.select(CONF[:1], torch.zeros(1, dtype=torch.long)).tolist() == [[True, False, False, True, True]]


def test_threshold_config_is_validated():
    with pytest.raises(ValueError, match="sampler.threshold must be in"):
        build_component("samplers", {"name": "threshold", "threshold": 1.5})
    with pytest.raises(ValueError, match="sampler.factor must be > 0"):
        build_component("samplers", {"name": "threshold", "factor": 0.0})
    with pytest.raises(ConfigError, match="sampler.tau: unknown key"):
        build_component("samplers", {"name": "threshold", "tau": 0.5}, path="sampler")
