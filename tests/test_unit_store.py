"""core/unit_store.py: shards + index, resuming, torn writes, mismatched tokenizers."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from diffuspeech.unit_store import UnitStore, UnitStoreError, UnitStoreWriter

META = {"tokenizer": {"name": "mel_kmeans", "path": "c.safetensors"}, "num_units": 500, "frame_rate": 25.0, "sample_rate": 16000}


def utterances(n: int, num_units: int = 500) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return {f"utt {i}/x": torch.randint(num_units, (int(torch.randint(0, 40, (1,), generator=g)),), generator=g) for i in range(n)}


def test_round_trip_in_shards(tmp_path):
    data = utterances(7)
    with UnitStoreWriter(tmp_path, META, shard_size=3) as w:
        for i, (k, v) in enumerate(data.items()):
            w.add(k, v, duration_s=0.5 + i)
    shards = sorted(p.name for p in tmp_path.glob("units-*.safetensors"))
    assert shards == ["units-00000.safetensors", "units-00001.safetensors", "units-00002.safetensors"]
    store = UnitStore(tmp_path)
    assert len(store) == 7 and store.ids() == list(data)
    for k, v in data.items():
        got = store[k]
        assert got.dtype == torch.long and torch.equal(got, v)
        assert store.record(k).num_units == v.numel()
    assert "utt 0/x" in store and "nope" not in store
    assert store.total_duration_s() == pytest.approx(sum(0.5 + i for i in range(7)))
    assert store.meta["tokenizer"]["name"] == "mel_kmeans"
    with safe_open(str(tmp_path / shards[0]), "pt") as f:  # 500 units fit in int16
        assert f.get_tensor("utt 0/x").dtype == torch.int16
    with pytest.raises(KeyError, match="'nope' is not in the unit store"):
        store["nope"]


def test_large_vocabularies_use_int32_and_durations_are_kept(tmp_path):
    meta = {**META, "num_units": 70000}
    with UnitStoreWriter(tmp_path, meta) as w:
        w.add("a", torch.tensor([69999, 3]), 0.1, durations=torch.tensor([2, 5]))
        w.add("b", torch.tensor([1]), 0.1)
    store = UnitStore(tmp_path)
    assert store["a"].tolist() == [69999, 3]
    assert store.durations("a").tolist() == [2, 5] and store.durations("b") is None
    assert store.ids() == ["a", "b"]


def test_resume_skips_done_ids_and_repairs_a_torn_index_line(tmp_path):
    data = utterances(5)
    items = list(data.items())
    with UnitStoreWriter(tmp_path, META, shard_size=2) as w:
        for k, v in items[:3]:
            w.add(k, v, 1.0)
    # a killed writer can leave a half-written line and an orphan temporary shard
    with open(tmp_path / "index.jsonl", "a") as f:
        f.write('{"id": "utt 3/x", "sha')
    (tmp_path / ".units-00002.safetensors.tmp").write_bytes(b"partial")
    assert len(UnitStore(tmp_path)) == 3  # readers ignore the torn line
    w = UnitStoreWriter(tmp_path, META, shard_size=2)
    assert [k in w for k, _ in items] == [True, True, True, False, False]
    with pytest.raises(UnitStoreError, match="already in"):
        w.add(items[0][0], items[0][1], 1.0)
    for k, v in items[3:]:
        w.add(k, v, 1.0)
    w.flush()
    lines = (tmp_path / "index.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == list(data)
    store = UnitStore(tmp_path)
    assert all(torch.equal(store[k], v) for k, v in data.items())
    assert len({store.record(k).shard for k in data}) == 3  # the new shard got a fresh number
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_different_tokenizer_is_refused(tmp_path):
    UnitStoreWriter(tmp_path, META).flush()
    other = {**META, "tokenizer": {"name": "hubert", "model_path": "m"}}
    with pytest.raises(UnitStoreError, match="different tokenizer"):
        UnitStoreWriter(tmp_path, other)


def test_bad_inputs_and_folders(tmp_path):
    w = UnitStoreWriter(tmp_path / "s", META)
    with pytest.raises(UnitStoreError, match="non-empty string"):
        w.add("", torch.tensor([1]), 1.0)
    with pytest.raises(UnitStoreError, match="shape"):
        w.add("x", torch.zeros(2, 2, dtype=torch.long), 1.0)
    with pytest.raises(UnitStoreError, match="not found"):
        UnitStore(tmp_path / "missing")
    with pytest.raises(UnitStoreError, match="no index.jsonl"):
        UnitStore(tmp_path / "s")
    w.add("x", torch.tensor([1, 2]), 1.0)
    w.flush()
    (tmp_path / "s" / "units-00000.safetensors").unlink()
    with pytest.raises(UnitStoreError, match="shard listed in index.jsonl is missing"):
        UnitStore(tmp_path / "s")["x"]
    (tmp_path / "s" / "index.jsonl").write_text("{not json}\n")
    with pytest.raises(UnitStoreError, match=r"index.jsonl:1: malformed index line"):
        UnitStore(tmp_path / "s")
