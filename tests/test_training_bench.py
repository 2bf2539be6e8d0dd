"""`diffuspeech bench train` runs and its memory tracker counts what a step allocates."""

import json

import torch

from diffuspeech.bench._memory import PeakTensorMemory
from diffuspeech.cli import main


def test_peak_tensor_memory_counts_allocations_and_frees():
    a = torch.zeros(1024, 256)  # 1 MiB, before the block: not counted
    with PeakTensorMemory() as m:
        b = torch.cat([a] * 4)  # 4 MiB
        b.add_(1)  # in place: nothing new
        v = b[:10]  # a view: nothing new
        del b, v
        c = torch.cat([a] * 2)  # 2 MiB
    assert m.peak == 4 * 2**20
    assert m.live == 2 * 2**20
    del c


def test_bench_train_json_line(capsys):
    n = torch.get_num_threads()
    try:
        assert main(["bench", "train", "--json", "--vocab", "4096", "--length", "32", "--batch", "2", "--steps", "1", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(n)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("device", "full_logits_tokens_per_s", "masked_logits_tokens_per_s", "speedup", "full_logits_peak_mb", "masked_logits_peak_mb"):
        assert key in out
    assert 0.3 < out["mask_ratio"] < 0.7
    assert out["masked_logits_peak_mb"] < out["full_logits_peak_mb"]  # the full canvas holds [B, L, V] logits
