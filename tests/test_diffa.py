"""DIFFA composes from config: encoders and adapters, speech_features segments spliced into the
backbone's embeddings, adapters-only training with a frozen LM and encoder, the 8B config on meta."""

import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from synthetic_manifest import WORDS
from tiny_whisper import write_tiny_whisper

from diffuspeech.audio import write_audio
from diffuspeech.compose import ConfigError, build_component, load_config, validate_config
from diffuspeech.encoder import EncoderInputError
from diffuspeech.model import SpeechDiffusionModel
from diffuspeech.pipeline import Pipeline
from diffuspeech.speech_features import SpeechFeatures, SplicedBackbone
from diffuspeech.training.module import build_optimizer, select_trainable
from diffuspeech.training.trainer import Trainer

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
pytestmark = pytest.mark.usefixtures("one_thread")


def spoken(text: str, sr: int = 16000) -> torch.Tensor:
    """A deterministic "voice": each word a 0.12 s chord of two word-dependent tones, 0.03 s apart."""
    parts = []
    for w in text.split():
        f1, f2 = 200 + 37 * (sum(map(ord, w)) % 23), 900 + 53 * (len(w) * 7 % 17)
        t = torch.arange(int(0.12 * sr)) / sr
        parts += [0.3 * (torch.sin(2 * math.pi * f1 * t) + torch.sin(2 * math.pi * f2 * t)), torch.zeros(int(0.03 * sr))]
    return torch.cat(parts)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffa")
    rows = []
    for i in range(30):
        a, b = i % 6, (i * 7) % 5
        question = f"what is {WORDS[a]} plus {WORDS[b]}"
        write_audio(root / f"q{i}.wav", spoken(question), 16000)
        rows.append({"id": f"q{i}", "split": "dev" if i % 6 == 5 else "train", "question_text": question,
                     "thinking": f"{a} + {b} = {a + b}", "answer_text": str(a + b), "question_audio": f"q{i}.wav"})
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny(manifest=None, *overrides):
    cfg = load_config(CONFIGS / "diffa_tiny.yaml", [f"data.manifest={manifest or 'x.jsonl'}", *overrides])
    return cfg


# --------------------------------------------------------------------------- the Whisper encoder, real format
def test_whisper_folder_written_by_transformers_loads_and_matches_its_hidden_states(tmp_path):
    from transformers import WhisperFeatureExtractor, WhisperModel

    folder = write_tiny_whisper(tmp_path / "whisper")
    encoder = build_component("encoders", {"name": "whisper", "path": str(folder)}, "encoder")
    assert encoder.num_layers == 3 and encoder.feature_size == 16 and encoder.max_samples == 16000
    assert not any(p.requires_grad for p in encoder.parameters())  # frozen by default
    wav = 0.1 * torch.randn(9600, generator=torch.Generator().manual_seed(0))  # 0.6 s
    out = encoder(wav[None], torch.tensor([9600]))
    reference = WhisperModel.from_pretrained(folder).eval()
    feats = WhisperFeatureExtractor.from_pretrained(folder)(wav.numpy(), sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        want = reference.encoder(feats, output_hidden_states=True).hidden_states
    assert out.lengths.tolist() == [30]  # 50 frames/s
    for got, ref in zip(out.hidden, want):
        assert torch.equal(got, ref[:, :30])
    with pytest.raises(EncoderInputError, match=r"longer than the encoder's 1.00 s window; Whisper's window is fixed by encoder.path"):
        encoder.check_audio(20000, "q.wav")


def test_whisper_preset_builds_on_the_meta_device():
    encoder = build_component("encoders", {"name": "whisper", "preset": "small", "device": "meta"}, "encoder")
    assert encoder.feature_size == 768 and encoder.num_layers == 13 and encoder.max_samples == 30 * 16000
    assert next(encoder.parameters()).device.type == "meta"


# --------------------------------------------------------------------------- composition and its errors
def test_adapter_sizes_come_from_the_encoder_and_backbone():
    model = SpeechDiffusionModel(tiny(), base_dir=CONFIGS)
    assert model.config.adapters.semantic.input_size == 80 and model.config.adapters.semantic.output_size == 64
    assert list(model.adapters) == ["acoustic", "semantic"]
    front = SpeechFeatures.of(model)
    # 1 s at 50 frames/s: 51 frames -> semantic (51 - 1) // 4 + 1 = 13, plus 4 queries
    assert front.slots(16000) == 17
    assert set(model.provenance()["components"]) >= {"encoder", "adapters.acoustic", "adapters.semantic"}


@pytest.mark.parametrize("override,message", [
    ("adapters.semantic.output_size=32", r"adapters.semantic.output_size: 32 does not match the backbone's hidden size \(64"),
    ("adapters.acoustic.input_size=40", r"adapters.acoustic.input_size: 40 does not match the encoder's feature width \(80"),
    ("adapters.acoustic.layers=[3]", r"adapters.acoustic.layers: layer 3 does not exist"),
    ("encoder=null", r"tasks.asr.segments.0: modality speech_features needs an `encoder`|adapters.acoustic: adapters read an encoder"),
    ("adapters=null", r"speech_features needs an `encoder` and `adapters` section, and the config has no `adapters`"),
    ("tasks.asr.segments.0.role=target", r"tasks.asr.segments\[0\]: modality speech_features is continuous input, so its role must be condition"),
])
def test_bad_compositions_name_the_keys(override, message):
    with pytest.raises(ConfigError, match=message):
        SpeechDiffusionModel(tiny(None, override), base_dir=CONFIGS)


def test_a_backbone_without_an_embeddings_path_is_refused():
    class NoEmbeddings:
        pass

    with pytest.raises(ConfigError, match="has no embeddings path.*speech_features"):
        SplicedBackbone(NoEmbeddings(), torch.zeros(1, 3, dtype=torch.bool), torch.zeros(0, 4), 0)


def test_audio_longer_than_the_encoder_window_is_a_clear_error(tmp_path):
    model = SpeechDiffusionModel(tiny(None, "encoder.max_seconds=0.5"), base_dir=CONFIGS)
    expected = r"input\[0\].question_audio: 1.00 s of audio is longer than the encoder's 0.50 s window; cut the clip, or raise encoder.max_seconds"
    with pytest.raises(EncoderInputError, match=expected):
        Pipeline(model).run("s2t", {"question_audio": torch.randn(16000)})


# --------------------------------------------------------------------------- the embeddings path
@pytest.mark.parametrize("node", [
    {"name": "llada", "preset": "tiny", "d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 2, "mlp_hidden_size": 64, "vocab_size": 50},
    {"name": "hf_decoder", "model_type": "llama", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 50},
])
def test_inputs_embeds_of_the_lookup_equal_the_ids_path(node):
    backbone = build_component("backbones", node, "backbone").eval()
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(backbone.hidden_states(ids, None, inputs_embeds=backbone.embed_tokens(ids)), backbone.hidden_states(ids), atol=1e-6)
    if hasattr(backbone, "hidden_states_and_cache"):  # the cached pair takes embeddings too
        emb = backbone.embed_tokens(ids)
        full, cache = backbone.hidden_states_and_cache(ids, None, inputs_embeds=emb)
        pos = torch.arange(5, 9)[None].expand(2, -1)
        win = backbone.hidden_states_cached(ids.gather(1, pos), pos, cache, None, inputs_embeds=emb.gather(1, pos[..., None].expand(-1, -1, 32)))
        assert torch.allclose(win, full[:, 5:], atol=1e-5)


def test_spliced_positions_read_the_adapter_embeddings_and_cfg_masks_them():
    model = SpeechDiffusionModel(tiny(), base_dir=CONFIGS)
    pipe = Pipeline(model)
    wav = 0.1 * torch.randn(8000, generator=torch.Generator().manual_seed(0))
    example, _ = pipe.prepare_inputs(pipe.task("s2t"), {"question_audio": wav}, "input")
    spec, batch = pipe.canvas("s2t", [example], pipe.target_lengths("s2t", pipe.task("s2t"), pipe.defaults))
    spliced = pipe.backbone_for(batch)
    where = batch["features"]  # [1, L]
    assert int(where.sum()) == pipe.features.slots(8000)
    emb = spliced._embeds(spec.tokens)  # [1, L, D]
    want = pipe.features.embed(batch["feature_audio"], batch["feature_lengths"])
    assert torch.allclose(emb[where], want, atol=1e-5) and torch.equal(emb[~where], model.backbone.embed_tokens(spec.tokens)[~where])
    uncond = spec.tokens.masked_fill(spec.condition, model.vocab.mask_id)  # what the CFG pass feeds
    both = spliced._embeds(torch.cat([spec.tokens, uncond]))  # [2, L, D]
    mask_row = model.backbone.embed_tokens(torch.tensor([model.vocab.mask_id]))[0]
    assert torch.allclose(both[0][where[0]], want, atol=1e-5) and torch.allclose(both[1][where[0]], mask_row.expand(int(where.sum()), -1))
    out = pipe.run("s2t", {"question_audio": wav}, cfg_scale=1.0)
    assert out.forward_passes == 2 * out.steps


def test_prefix_cache_with_one_step_per_block_equals_no_cache():
    pipe = Pipeline(SpeechDiffusionModel(tiny(), base_dir=CONFIGS))
    wavs = [{"question_audio": spoken("what is two plus one")}, {"question_audio": spoken("what is ten plus four plus one")}]
    outs = {}
    for mode in ("none", "prefix", "dual"):
        outs[mode] = [o.tokens for o in pipe.run_batch("s2t", wavs, steps=16, block_length=1, kv_cache=mode)]
    for mode in ("prefix", "dual"):
        assert all(torch.equal(a, b) for a, b in zip(outs["none"], outs[mode]))


# --------------------------------------------------------------------------- training: adapters only
def test_adapter_stages_leave_the_lm_and_encoder_bit_identical(manifest, tmp_path):
    cfg = tiny(manifest, "encoder.conv_layers=1", "encoder.conv_width=32", "train.progress=false", "train.tensorboard=false")
    for stage, n in zip(cfg.train.stages, (6, 4, 4)):
        stage.steps = n
    result = Trainer(cfg, base_dir=CONFIGS, out=tmp_path / "run").run()
    assert len(result.losses) == 14 and all(math.isfinite(v) for v in result.losses.values())
    stages = {s: load_file(str(tmp_path / "run" / "stages" / s / "model" / "model.safetensors")) for s in ("lm", "align", "qa")}
    final = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    frozen = [k for k in final if k.startswith(("backbone.", "encoder."))]
    assert any(k.startswith("encoder.convs") for k in frozen)
    assert all(torch.equal(stages["lm"][k], final[k]) for k in frozen)  # bit-identical through both adapter stages
    changed = lambda a, b, prefix: any(not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))  # noqa: E731
    assert changed(stages["lm"], stages["align"], "adapters.semantic.") and not changed(stages["lm"], stages["align"], "adapters.acoustic.")
    assert changed(stages["align"], stages["qa"], "adapters.acoustic.")
    # the optimizer of an adapter stage holds exactly the adapter parameters
    model = SpeechDiffusionModel(tiny(manifest), base_dir=CONFIGS)
    from diffuspeech.training.module import TrainModule

    tm = TrainModule(model.modules(), build_component("objectives", "diffusion"), build_component("attention", "bidirectional"))
    names = select_trainable(tm, ["adapters"], [], "train.stages[2]")
    opt = build_optimizer(tm, 1e-3, 0.0, (0.9, 0.95), 1e-8)
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert names and all(n.startswith("adapters.") for n in names)
    assert held == {id(p) for n, p in tm.named_parameters() if n.startswith("adapters.")}
    # the saved model decodes spoken questions
    saved = Pipeline.from_pretrained(tmp_path / "run" / "model")
    out = saved.run("s2t", {"question_audio": str(manifest.parent / "q0.wav")})
    assert set(out.fields) == {"thinking", "answer_text"}


def test_init_from_a_text_lm_keeps_its_weights_and_starts_the_adapters_fresh(manifest, tmp_path):
    cfg = tiny(manifest, "train.progress=false", "train.tensorboard=false")
    cfg.train.stages = [cfg.train.stages[0]]
    cfg.train.stages[0].steps = 3
    lm = Trainer(cfg, base_dir=CONFIGS, out=tmp_path / "lm").run().model_dir
    text_only = tmp_path / "text_lm"
    m = SpeechDiffusionModel.load(lm)
    OmegaConf.update(m.config, "adapters", None, merge=False)
    OmegaConf.update(m.config, "encoder", None, merge=False)
    m.config.tasks = {"t2t": m.config.tasks.t2t}
    SpeechDiffusionModel(m.config).save(text_only)  # a text LM with no encoder or adapters
    SpeechDiffusionModel.load(text_only)
    cfg = tiny(manifest, f"train.init_from={text_only}", "train.progress=false", "train.tensorboard=false")
    cfg.train.stages = [cfg.train.stages[1]]
    cfg.train.stages[0].steps = 2
    Trainer(cfg, base_dir=CONFIGS, out=tmp_path / "adapt").run()
    before, after = load_file(str(text_only / "model.safetensors")), load_file(str(tmp_path / "adapt" / "model" / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))


# --------------------------------------------------------------------------- the loss and the 8B config
def test_sequence_normalisation_is_diffas_loss():
    """DIFFA: t = (1 - eps) u + eps, loss = sum over masked answer tokens of CE / t, / answer length, batch mean."""
    from diffuspeech.objective import ObjectiveContext

    model = SpeechDiffusionModel(tiny(), base_dir=CONFIGS)
    objective = build_component("objectives", {"name": "diffusion", "normalize": "sequence"})
    objective.prepare(ObjectiveContext(model.scheduler, model.noiser, model.vocab.mask_id))
    from diffuspeech.formats import collate, layout

    front = SpeechFeatures.of(model)
    seqs = [layout("s2t", model.tasks["s2t"], {"question_audio": spoken(q), "thinking": th, "answer_text": a}, model.vocab,
                   feature_slots=front.slots) for q, th, a in (("what is one plus two", "1 + 2 = 3", "3"), ("what is four plus four", "4 + 4 = 8", "8"))]
    batch = collate(seqs, model.vocab.pad_id)
    backbone = SplicedBackbone(model.backbone, batch["features"], front.embed(batch["feature_audio"], batch["feature_lengths"]), model.vocab.mask_id)
    gen = torch.Generator().manual_seed(3)
    got = objective.loss(backbone, batch, gen).loss
    gen = torch.Generator().manual_seed(3)  # the same draws, by hand
    t = objective.sample_time(2, gen)
    masked, _ = model.noiser(batch["target"] & batch["valid"], batch["modality"], t, model.scheduler, gen)
    total = 0.0
    hidden = backbone.hidden_states(batch["ids"].masked_fill(masked, model.vocab.mask_id))  # [2, L, D]
    for i in range(2):
        logits = backbone.logits(hidden[i])  # [L, V]
        ce = torch.nn.functional.cross_entropy(logits[masked[i]], batch["ids"][i][masked[i]], reduction="sum")
        total = total + ce / t[i] / batch["target"][i].sum()
    assert torch.allclose(got, total / 2, rtol=1e-5, atol=1e-6)


def test_diffa_llada8b_config_validates_and_builds_on_the_meta_device():
    path = CONFIGS / "diffa_llada8b.yaml"
    validate_config(load_config(path), allow_missing=True, base_dir=CONFIGS)
    cfg = load_config(path, ["backbone.path=null", "backbone.preset=8b", "backbone.device=meta", "encoder.path=null", "encoder.device=meta",
                             "vocab.text_tokenizer=null", "data.manifest=x"])
    model = SpeechDiffusionModel(cfg, base_dir=CONFIGS)
    assert model.backbone.hidden_size == 4096 and model.encoder.feature_size == 768
    assert model.config.adapters.semantic.output_size == 4096 and model.config.adapters.acoustic.layers == [2, 5, 8, 11]
    assert next(model.adapters.parameters()).device.type in ("cpu", "meta")
    assert SpeechFeatures.of(model).slots(30 * 16000) == 64 + 20 + 375  # queries (the four layers mixed), prompt, 1500 frames / 4


def test_self_distillation_teacher_hears_the_same_speech():
    """VocalNet-MDM's objective on a DIFFA model: the frozen teacher copy reads the batch's adapter embeddings too."""
    from diffuspeech.formats import collate, layout
    from diffuspeech.objective import ObjectiveContext

    model = SpeechDiffusionModel(tiny(), base_dir=CONFIGS)
    objective = build_component("objectives", {"name": "self_distillation", "teacher_steps": 2})
    objective.prepare(ObjectiveContext(model.scheduler, model.noiser, model.vocab.mask_id, build_component("attention", "bidirectional")))
    front = SpeechFeatures.of(model)
    seqs = [layout("s2t", model.tasks["s2t"], {"question_audio": spoken(q), "thinking": "1 + 2 = 3", "answer_text": "3"}, model.vocab,
                   feature_slots=front.slots) for q in ("what is one plus two", "what is two plus one")]
    batch = collate(seqs, model.vocab.pad_id)
    student = SplicedBackbone(model.backbone, batch["features"], front.embed(batch["feature_audio"], batch["feature_lengths"]), model.vocab.mask_id)
    teacher = objective._teacher_for(student)
    assert isinstance(teacher, SplicedBackbone) and teacher.backbone is not model.backbone and torch.equal(teacher.dense, student.dense)
    out = objective.loss(student, batch, torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapters.parameters())
    assert all(p.grad is None for p in teacher.backbone.parameters())
