import math

import pytest
import torch

from diffuspeech import build_component


@pytest.mark.parametrize("name,fn", [("cosine", lambda t: math.cos(math.pi / 2 * (1 - t))), ("linear", lambda t: t)])
def test_gamma(name, fn):
    s = build_component("schedulers", {"name": name})
    for t in (0.0, 0.1, 0.5, 0.9, 1.0):
        assert s.mask_prob(torch.tensor(t)).item() == pytest.approx(fn(t), abs=1e-6)


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_reveal_counts_sum_and_follow_schedule(name):
    s = build_component("schedulers", {"name": name})
    n = torch.tensor([0, 1, 7, 64, 101])
    counts = s.reveal_counts(n, 8)
    assert counts.shape == (5, 8) and (counts >= 0).all()
    assert torch.equal(counts.sum(1), n)
    remaining = n[:, None] - counts.cumsum(1)
    t = torch.linspace(1, 0, 9)[1:]
    expected = torch.round(n[:, None].double() * s.mask_prob(t).double()[None]).long()
    assert torch.equal(remaining, expected)


def test_cosine_reveals_few_early_many_late():
    counts = build_component("schedulers", {"name": "cosine"}).reveal_counts(torch.tensor([100]), 10)[0]
    assert counts[0] < counts[-1]


def test_speech_delay_holds_speech_until_text_has_started():
    s = build_component("schedulers", {"name": "per_modality", "speech_delay": 0.5})
    text = s.reveal_counts(torch.tensor([40]), 8, "text")[0]
    speech = s.reveal_counts(torch.tensor([40]), 8, "speech")[0]
    assert speech[:4].sum() == 0 and text[:4].sum() > 0
    assert speech.sum() == 40 and text.sum() == 40


def test_bad_steps():
    s = build_component("schedulers", {"name": "cosine"})
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        s.reveal_counts(torch.tensor([3]), 0)
    with pytest.raises(ValueError, match="speech_delay must be in"):
        build_component("schedulers", {"name": "per_modality", "speech_delay": 1.0})
