"""``diffuspeech bench decode`` on CPU (the tiny preset): the figures it prints, and parity with the reference loop."""

import json

from diffuspeech.cli import main


def test_decode_bench_prints_every_mode_and_matches_the_reference(capsys):
    assert main(["bench", "decode", "--json", "--prompt", "16", "--gen", "32", "--block-length", "8", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["none_identical_to_reference"] is True and out["none_agreement"] == 1.0
    for mode in ("none", "prefix", "dual"):
        assert out[f"{mode}_tokens_per_s"] > 0 and out[f"{mode}_vs_reference"] > 0
    assert out["dual_ms_per_cached_step"] >= 0 and "cpu" in out["device"]
    assert "weight_read_floor_ms" not in out  # only with a GPU's bandwidth
