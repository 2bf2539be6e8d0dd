"""Manifest reading, field mapping, bad-row policy, mixture batching, and the DiffuSpeech-on-LLaDA layout."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from diffuspeech.compose import ConfigError, load_config, validate_config
from diffuspeech.formats import DEFAULT_TASKS, parse_tasks
from diffuspeech.training.batching import MixtureBatcher, normalise_mixture, shard
from diffuspeech.training.data import DataConfig, DataError, SpeechResolver, load_examples, speech_resolver
from diffuspeech.training.trainer import Trainer
from diffuspeech.unit_store import UnitStoreWriter
from diffuspeech.vocab import Vocab, VocabConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TOKENIZER = str(CONFIGS / "tiny" / "char_tokenizer.json")
FIELDS = {"asr": {"speech": "question_speech", "text": "question_text"}, "tts": {"text": "answer_text", "speech": "answer_speech"},
          "lm": {"text": "question_text"}}


@pytest.fixture(scope="module")
def vocab():
    return Vocab(VocabConfig(text_tokenizer=TOKENIZER, num_units=16))  # 96 text + 12 specials + 16 units


@pytest.fixture(scope="module")
def tasks():
    return parse_tasks(DEFAULT_TASKS)


def row(i, **extra):
    base = {"id": f"r{i}", "question_text": "two plus one", "thinking": "2 + 1 = 3", "answer_text": "3",
            "question_speech": [1, 2, 3, 4], "answer_speech": [5, 6]}
    base.update(extra)
    return base


def write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def load(path, vocab, tasks, speech=None, max_length=64, split=None, default_split=None, **cfg):
    config = DataConfig(fields=FIELDS, **cfg)
    return load_examples(path, tasks, vocab, speech or SpeechResolver(), config, max_length, split=split, default_split=default_split)


def test_one_row_serves_every_task_through_the_field_mapping(tmp_path, vocab, tasks):
    ex = load(write(tmp_path / "m.jsonl", [row(0)]), vocab, tasks)
    assert ex.counts() == {name: 1 for name in tasks}
    asr = ex.by_task["asr"][0].seq
    # <|asr|> <sos> units(question) <eos> <sot> text(question) <eot>
    assert asr.ids[0] == vocab.special("<|asr|>")
    assert asr.ids[2:6].tolist() == [vocab.unit_offset + u for u in (1, 2, 3, 4)]
    assert vocab.decode_text(asr.ids[asr.target]) == "two plus one"
    tts = ex.by_task["tts"][0].seq
    assert vocab.ids_to_units(tts.ids[tts.target]).tolist() == [5, 6]
    # declared tasks restrict the row
    ex = load(write(tmp_path / "n.jsonl", [row(0, tasks=["asr", "s2s"]), row(1, task="lm")]), vocab, tasks)
    assert ex.counts() == {"asr": 1, "s2s": 1, "lm": 1, "tts": 0, "s2t": 0, "t2t": 0}
    # without a declaration, a row serves only the tasks whose fields it has
    ex = load(write(tmp_path / "o.jsonl", [{"id": "t", "question_text": "hi", "question_speech": [1]}]), vocab, tasks)
    assert {k for k, v in ex.counts().items() if v} == {"asr", "lm"}


def test_split_selection(tmp_path, vocab, tasks):
    path = write(tmp_path / "m.jsonl", [row(0, split="train"), row(1, split="dev"), row(2)])
    train = load(path, vocab, tasks, split="train", default_split="train")
    dev = load(path, vocab, tasks, split="dev", default_split="train")
    assert [e.row_id for e in train.by_task["lm"]] == ["r0", "r2"]
    assert [e.row_id for e in dev.by_task["lm"]] == ["r1"]


BAD = [
    ('{"id": "x", ', "invalid_json"),
    (row(1, task="sing"), "unknown_task"),
    (row(2, task="asr", question_text=""), "empty_text"),
    (row(3, task="asr", question_speech=None), "missing_field"),
    (row(4, task="asr", question_speech=[1, 2, 16]), "units_out_of_range"),
    (row(5, task="asr", question_speech=[-1]), "units_out_of_range"),
    (row(6, task="asr", question_speech={"units": "nope"}), "missing_units"),
    (row(7, task="asr", question_speech={"audio": "missing.wav"}), "missing_audio"),
    (row(8, task="asr", question_text="x" * 80), "too_long"),
    (row(9, task="asr", question_speech="units-1"), "bad_value"),
]


def test_bad_rows_are_skipped_and_counted(tmp_path, vocab, tasks, caplog):
    path = write(tmp_path / "m.jsonl", [row(0, task="asr")] + [r for r, _ in BAD])
    ex = load(path, vocab, tasks, on_bad_row="skip")
    assert [e.row_id for e in ex.by_task["asr"]] == ["r0"]
    assert ex.report.counts == Counter(reason for _, reason in BAD)
    assert "skipped 10 of 11 examples" in caplog.text and "m.jsonl:2" in caplog.text


@pytest.mark.parametrize("bad,reason", BAD, ids=[r for _, r in BAD])
def test_bad_rows_stop_with_a_clear_error(tmp_path, vocab, tasks, bad, reason):
    path = write(tmp_path / "m.jsonl", [row(0, task="asr"), bad])
    with pytest.raises(DataError) as err:
        load(path, vocab, tasks, on_bad_row="error")
    message = str(err.value)
    assert "m.jsonl:2 (id " in message and "data.on_bad_row=skip" in message


def test_unit_store_and_audio_references(tmp_path, vocab, tasks):
    with UnitStoreWriter(tmp_path / "units", {"tokenizer": "test", "num_units": 16, "frame_rate": 25, "sample_rate": 16000}) as w:
        w.add("q0", torch.tensor([3, 3, 9]), duration_s=0.12)
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600, dtype=np.float32), 16000)
    rows = [row(0, task="asr", question_speech={"units": "q0"}), row(1, task="tts", answer_speech={"audio": "a.wav"})]
    speech = speech_resolver(DataConfig(unit_store="units"), tmp_path, tmp_path / "m.jsonl")
    speech.encode_audio = lambda p: torch.tensor([7, 8]) if p == wav else None  # a stand-in tokenizer
    ex = load(write(tmp_path / "m.jsonl", rows), vocab, tasks, speech=speech)
    asr, tts = ex.by_task["asr"][0].seq, ex.by_task["tts"][0].seq
    assert (asr.ids[2:5] - vocab.unit_offset).tolist() == [3, 3, 9]
    assert vocab.ids_to_units(tts.ids[tts.target]).tolist() == [7, 8]
    with pytest.raises(DataError, match="16-unit tokenizer but vocab.num_units is 500"):
        speech_resolver(DataConfig(unit_store="units"), tmp_path, None, num_units=500)
    with pytest.raises(DataError, match="data.unit_store"):
        speech_resolver(DataConfig(unit_store="nowhere"), tmp_path, None)


def batcher(lengths, mixture, seed=0, batch_size=4, pools=4):
    return MixtureBatcher(lengths, normalise_mixture(mixture, {t: len(v) for t, v in lengths.items()}, "m"), batch_size, pools, seed)


def test_mixture_weights_epochs_and_length_buckets():
    gen = torch.Generator().manual_seed(0)
    lengths = {t: torch.randint(5, 200, (n,), generator=gen).tolist() for t, n in (("asr", 50), ("tts", 30), ("lm", 7))}
    b = batcher(lengths, {"asr": 40, "tts": 40, "lm": 20}, batch_size=8, pools=16)
    drawn = [b.next_batch() for _ in range(12 * 16)]  # 12 whole pools
    counts = Counter(task for batch in drawn for task, _ in batch)
    total = sum(counts.values())
    assert abs(counts["asr"] / total - 0.4) < 0.03 and abs(counts["lm"] / total - 0.2) < 0.03
    # each task walks its examples in epochs: every example is drawn equally often (+-1)
    for task, n in (("lm", 7), ("tts", 30)):
        seen = Counter(i for batch in drawn for t, i in batch if t == task)
        assert len(seen) == n and max(seen.values()) - min(seen.values()) <= 1
    # length bucketing: far less padding than the same draws in random batches
    flat = [lengths[t][i] for batch in drawn for t, i in batch]
    def padding(batches):
        return sum(max(x) * len(x) - sum(x) for x in batches)
    bucketed = padding([[lengths[t][i] for t, i in batch] for batch in drawn])
    perm = torch.randperm(len(flat), generator=gen).tolist()
    shuffled = padding([[flat[j] for j in perm[k : k + 8]] for k in range(0, len(flat), 8)])
    assert bucketed < 0.25 * shuffled


def test_batcher_resumes_exactly_and_seeds_differ():
    lengths = {"asr": list(range(3, 40)), "tts": list(range(10, 22))}
    a = batcher(lengths, {"asr": 1, "tts": 1})
    first = [a.next_batch() for _ in range(7)]  # stops mid-pool
    state = json.loads(json.dumps(a.state_dict()))  # what a checkpoint stores
    rest = [a.next_batch() for _ in range(10)]
    b = batcher(lengths, {"asr": 1, "tts": 1})
    b.load_state_dict(state)
    assert [b.next_batch() for _ in range(10)] == rest
    c = batcher(lengths, {"asr": 1, "tts": 1}, seed=1)
    assert [c.next_batch() for _ in range(7)] != first


def test_mixture_and_shard_errors():
    with pytest.raises(ConfigError, match="no usable example for task 'lm'"):
        normalise_mixture({"asr": 1, "lm": 1}, {"asr": 3, "lm": 0}, "train.stages[0].mixture")
    with pytest.raises(ConfigError, match="no such task"):
        normalise_mixture({"sing": 1}, {"asr": 3}, "train.stages[0].mixture")
    assert normalise_mixture({}, {"asr": 3, "lm": 0, "tts": 1}, "m") == {"asr": 0.5, "tts": 0.5}
    assert shard(list(range(8)), 4, 2) == [4, 5]
    with pytest.raises(ConfigError, match="not divisible"):
        shard(list(range(6)), 4, 0)


def test_diffuspeech_llada_vocabulary_layout():
    cfg = load_config(CONFIGS / "diffuspeech_llada8b.yaml")
    assert set(OmegaConf.missing_keys(cfg)) == {"backbone.path", "vocab.text_tokenizer", "data.manifest", "data.unit_store"}
    vcfg = OmegaConf.to_container(cfg.vocab)
    vcfg["text_tokenizer"] = None
    v = Vocab(VocabConfig(**vcfg))
    assert v.text_range == (0, 126464)
    assert v.mask_id == 126336 and v.text_end_id == 126081 and v.pad_id == 126081
    assert sorted(v.special_ids.values()) == list(range(126464, 126473))
    assert v.special_ids["<eos>"] == 126472 and v.speech_end_id == 126472  # the speech end token is the last special
    assert v.unit_range == (126473, 126973) and v.size == 126973
    assert cfg.backbone.extend_vocab_to == v.size
    assert v.allowed_range("speech") == (126472, 126973)
    assert v.units_to_ids(torch.tensor([0, 499])).tolist() == [126473, 126972]
    # the stage mixtures are DiffuSpeech's
    stages = {s.name: dict(s.mixture) for s in cfg.train.stages}
    assert stages == {"stage1": {"asr": 40, "tts": 40, "lm": 20}, "stage2": {"s2s": 30, "s2t": 30, "t2t": 20, "asr": 10, "tts": 10}}
    # the trainer names every setting the user must give
    with pytest.raises(ConfigError, match="backbone.path") as err:
        Trainer(cfg)
    assert "data.unit_store" in str(err.value) and "vocab.text_tokenizer" in str(err.value)
    filled = load_config(CONFIGS / "diffuspeech_llada8b.yaml", ["backbone.path=/m", "vocab.text_tokenizer=/m", "data.manifest=x", "data.unit_store=u"])
    validate_config(filled)
