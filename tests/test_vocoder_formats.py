"""unit_hifigan loads checkpoints written by their real writers, strictly, and decodes like the originals.

- speechbrain: hyperparams.yaml instantiated by hyperpyyaml, weights saved by speechbrain's
  own save hook; parity against speechbrain's ``UnitHIFIGAN`` inference interface.
- CodeHiFiGAN: a reference CodeGenerator written here from the fairseq/textlesslib format
  (old-style weight norm: ``weight_g``/``weight_v``; zero padding), saved as
  ``torch.save({"generator": state_dict})`` + ``config.json``; parity against its forward.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from diffuspeech import build_component
from diffuspeech.plugins.vocoders.unit_hifigan.formats import CheckpointError
from diffuspeech.vocoder import VocoderInputError

NUM_UNITS = 12

SB_YAML = """\
sample_rate: 16000
num_units: 12
emb_dim: 8
generator: !new:speechbrain.lobes.models.HifiGAN.UnitHifiganGenerator
  in_channels: !ref <emb_dim>
  out_channels: 1
  resblock_type: "1"
  resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5]]
  resblock_kernel_sizes: [3, 5]
  upsample_kernel_sizes: [8, 4]
  upsample_initial_channel: 16
  upsample_factors: [4, 2]
  vocab_size: !ref <num_units> + 1
  embedding_dim: !ref <emb_dim>
  duration_predictor: {dur}
  var_pred_hidden_dim: 8
modules:
  generator: !ref <generator>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
  loadables:
    generator: !ref <generator>
"""


def write_speechbrain_folder(folder, duration_predictor: bool = False, seed: int = 0):
    """A speechbrain unit vocoder folder, written the way speechbrain writes one."""
    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.utils.checkpoints import torch_save

    folder.mkdir(parents=True, exist_ok=True)
    text = SB_YAML.replace("{dur}", str(duration_predictor))
    (folder / "hyperparams.yaml").write_text(text)
    torch.manual_seed(seed)
    hparams = load_hyperpyyaml(text)
    generator = hparams["generator"]
    with torch.no_grad():  # speechbrain's init is near-silent; make the weights matter
        for p in generator.parameters():
            p.add_(0.3 * torch.randn_like(p))
    torch_save(generator, folder / "generator.ckpt")
    return generator


def speechbrain_reference(folder, savedir, units: torch.Tensor) -> torch.Tensor:
    """Decode ``[T]`` units with speechbrain's own offline-loaded interface."""
    from speechbrain.inference.vocoders import UnitHIFIGAN
    from speechbrain.utils.fetching import FetchConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb = UnitHIFIGAN.from_hparams(
            source=str(folder), savedir=str(savedir), fetch_config=FetchConfig(allow_network=False)
        )
    return sb.decode_batch(units[None, :, None].clone())[0, 0]  # [S]


def test_speechbrain_folder_matches_speechbrain_inference(tmp_path):
    folder = tmp_path / "sb"
    write_speechbrain_folder(folder)
    voc = build_component("vocoders", {"name": "unit_hifigan", "path": str(folder)})
    assert voc.format == "speechbrain" and voc.num_units == NUM_UNITS
    assert voc.sample_rate == 16000 and voc.hop_length == 8
    torch.manual_seed(1)
    units = torch.randint(0, NUM_UNITS, (2, 20))
    lengths = torch.tensor([20, 13])
    wav, sample_lengths = voc.decode(units, lengths)
    assert wav.shape == (2, 160) and sample_lengths.tolist() == [160, 104]
    assert torch.all(wav[1, 104:] == 0)
    ref = speechbrain_reference(folder, tmp_path / "sb_save", units[0])
    assert ref.shape == (160,)
    torch.testing.assert_close(wav[0], ref, atol=1e-5, rtol=1e-4)
    assert ref.abs().max() > 1e-3  # not a silent comparison


def test_speechbrain_duration_predictor_matches(tmp_path):
    folder = tmp_path / "sbdur"
    write_speechbrain_folder(folder, duration_predictor=True, seed=3)
    voc = build_component("vocoders", {"name": "unit_hifigan", "path": str(folder), "duration_prediction": True})
    units = torch.tensor([3, 7, 1, 0, 11, 4, 9, 2])  # no repeats: deduplication is the identity
    wav = voc.decode_one(units)
    ref = speechbrain_reference(folder, tmp_path / "save", units)
    assert wav.shape == ref.shape and wav.numel() % 8 == 0
    torch.testing.assert_close(wav, ref, atol=1e-5, rtol=1e-4)
    # repeated units are collapsed before the durations are predicted
    torch.testing.assert_close(voc.decode_one(units.repeat_interleave(3)), wav)


def test_speechbrain_checkpoint_is_checked_strictly(tmp_path):
    folder = tmp_path / "sb"
    write_speechbrain_folder(folder)
    state = torch.load(folder / "generator.ckpt", weights_only=True)
    state.pop("conv_post.conv.bias")
    state["extra.weight"] = torch.zeros(2)
    torch.save(state, folder / "generator.ckpt")
    with pytest.raises(CheckpointError, match=r"missing weights: generator\.conv_post\.conv\.bias.*unexpected weights: generator\.extra\.weight"):
        build_component("vocoders", {"name": "unit_hifigan", "path": str(folder)})


def test_speechbrain_yaml_other_classes_are_refused(tmp_path):
    folder = tmp_path / "sb"
    write_speechbrain_folder(folder)
    text = (folder / "hyperparams.yaml").read_text()
    (folder / "hyperparams.yaml").write_text(
        text.replace("!new:speechbrain.lobes.models.HifiGAN.UnitHifiganGenerator", "!new:os.system")
    )
    with pytest.raises(CheckpointError, match="must be '!new:speechbrain"):
        build_component("vocoders", {"name": "unit_hifigan", "path": str(folder)})


def test_unit_count_mismatch_is_reported(tmp_path):
    folder = tmp_path / "sb"
    write_speechbrain_folder(folder)
    with pytest.raises(VocoderInputError, match="decodes 12 units"):
        build_component("vocoders", {"name": "unit_hifigan", "path": str(folder), "num_units": 500})


# --------------------------------------------------------------------------- CodeHiFiGAN
CODE_CFG = {
    "resblock": "1",
    "upsample_rates": [4, 2],
    "upsample_kernel_sizes": [8, 4],
    "upsample_initial_channel": 16,
    "resblock_kernel_sizes": [3, 5],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
    "num_embeddings": NUM_UNITS,
    "embedding_dim": 8,
    "model_in_dim": 16,
    "sampling_rate": 16000,
    "multispkr": True,
    "num_speakers": 5,
    "dur_predictor_params": {
        "encoder_embed_dim": 8,
        "var_pred_hidden_dim": 8,
        "var_pred_kernel_size": 3,
        "var_pred_dropout": 0.5,
    },
}


def _wn(module: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.nn.utils.weight_norm(module)  # the old API those checkpoints were written with


class RefResBlock(nn.Module):
    def __init__(self, ch: int, k: int, dilations: list[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(_wn(nn.Conv1d(ch, ch, k, dilation=d, padding=d * (k - 1) // 2)) for d in dilations)
        self.convs2 = nn.ModuleList(_wn(nn.Conv1d(ch, ch, k, padding=(k - 1) // 2)) for _ in dilations)

    def forward(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, 0.1)), 0.1))
        return x


class RefDurationPredictor(nn.Module):
    def __init__(self, dim: int, hidden: int, k: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv1d(dim, hidden, k, padding=(k - 1) // 2), nn.ReLU())
        self.ln1 = nn.LayerNorm(hidden)
        self.conv2 = nn.Sequential(nn.Conv1d(hidden, hidden, k, padding=1), nn.ReLU())
        self.ln2 = nn.LayerNorm(hidden)
        self.proj = nn.Linear(hidden, 1)

    def forward(self, x):  # [B, T, C] -> [B, T]
        x = self.ln1(self.conv1(x.transpose(1, 2)).transpose(1, 2))
        x = self.ln2(self.conv2(x.transpose(1, 2)).transpose(1, 2))
        return self.proj(x)[..., 0]


class RefCodeGenerator(nn.Module):
    """Reference CodeHiFiGAN generator (fairseq/textlesslib parameter names and maths)."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        c0 = cfg["upsample_initial_channel"]
        self.conv_pre = _wn(nn.Conv1d(cfg["model_in_dim"], c0, 7, padding=3))
        self.ups = nn.ModuleList(
            _wn(nn.ConvTranspose1d(c0 // 2**i, c0 // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            for i, (u, k) in enumerate(zip(cfg["upsample_rates"], cfg["upsample_kernel_sizes"]))
        )
        self.resblocks = nn.ModuleList(
            RefResBlock(c0 // 2 ** (i + 1), k, d)
            for i in range(len(self.ups))
            for k, d in zip(cfg["resblock_kernel_sizes"], cfg["resblock_dilation_sizes"])
        )
        self.conv_post = _wn(nn.Conv1d(c0 // 2 ** len(self.ups), 1, 7, padding=3))
        self.dict = nn.Embedding(cfg["num_embeddings"], cfg["embedding_dim"])
        self.spkr = nn.Embedding(cfg["num_speakers"], cfg["embedding_dim"])
        p = cfg["dur_predictor_params"]
        self.dur_predictor = RefDurationPredictor(p["encoder_embed_dim"], p["var_pred_hidden_dim"], p["var_pred_kernel_size"])
        self.nk = len(cfg["resblock_kernel_sizes"])

    def forward(self, code: torch.Tensor, spkr: int, dur_prediction: bool) -> torch.Tensor:  # code: [1, T]
        x = self.dict(code).transpose(1, 2)  # [1, D, T]
        if dur_prediction:
            dur = torch.clamp(torch.round(torch.exp(self.dur_predictor(x.transpose(1, 2))) - 1).long(), min=1)
            x = torch.repeat_interleave(x, dur.view(-1), dim=2)
        s = self.spkr(torch.tensor([spkr]))[:, :, None].expand(-1, -1, x.shape[-1])
        x = self.conv_pre(torch.cat([x, s], dim=1))
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, 0.1))
            x = sum(self.resblocks[i * self.nk + j](x) for j in range(self.nk)) / self.nk
        return torch.tanh(self.conv_post(F.leaky_relu(x)))[0, 0]


def write_codehifigan_folder(folder, cfg=CODE_CFG, seed: int = 0) -> RefCodeGenerator:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    ref = RefCodeGenerator(cfg).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.3 * torch.randn_like(p))
    (folder / "config.json").write_text(json.dumps(cfg))
    torch.save({"generator": ref.state_dict(), "optim_g": {}, "steps": 10}, folder / "g_00000010")
    return ref


def test_codehifigan_keys_are_the_fairseq_ones(tmp_path):
    write_codehifigan_folder(tmp_path)
    keys = torch.load(tmp_path / "g_00000010", weights_only=True)["generator"].keys()
    assert {"dict.weight", "spkr.weight", "conv_pre.weight_g", "conv_pre.weight_v", "ups.0.weight_v",
            "resblocks.3.convs2.2.weight_g", "dur_predictor.ln1.weight", "dur_predictor.proj.bias"} <= set(keys)


@pytest.mark.parametrize("dur_prediction", [False, True])
def test_codehifigan_matches_reference(tmp_path, dur_prediction):
    ref = write_codehifigan_folder(tmp_path)
    voc = build_component(
        "vocoders",
        {"name": "unit_hifigan", "path": str(tmp_path), "speaker_id": 3, "duration_prediction": dur_prediction},
    )
    assert voc.format == "codehifigan" and voc.num_units == NUM_UNITS and voc.sample_rate == 16000
    units = torch.tensor([5, 1, 1, 9, 0, 11, 4, 4, 4, 2])
    wav = voc.decode_one(units)
    with torch.no_grad():
        code = torch.unique_consecutive(units) if dur_prediction else units
        expected = ref(code[None], spkr=3, dur_prediction=dur_prediction)
    assert wav.shape == expected.shape
    torch.testing.assert_close(wav, expected, atol=1e-5, rtol=1e-4)
    if not dur_prediction:
        assert wav.numel() == units.numel() * 8


def test_codehifigan_without_weight_norm_and_bad_speaker(tmp_path):
    ref = write_codehifigan_folder(tmp_path)
    # a checkpoint whose weight norm was folded away (plain `weight` keys) still loads exactly
    for m in ref.modules():
        if hasattr(m, "weight_g"):
            torch.nn.utils.remove_weight_norm(m)
    torch.save({"generator": ref.state_dict()}, tmp_path / "g_00000010")
    voc = build_component("vocoders", {"name": "unit_hifigan", "path": str(tmp_path / "g_00000010"), "speaker_id": 1})
    units = torch.randint(0, NUM_UNITS, (16,))
    with torch.no_grad():
        expected = ref(units[None], spkr=1, dur_prediction=False)
    torch.testing.assert_close(voc.decode_one(units), expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match=r"speaker id \[7\] out of range \[0, 5\)"):
        build_component("vocoders", {"name": "unit_hifigan", "path": str(tmp_path), "speaker_id": 7})


def test_codehifigan_unsupported_and_mismatched_configs(tmp_path):
    write_codehifigan_folder(tmp_path)
    cfg = dict(CODE_CFG, f0=True)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="'f0' is set"):
        build_component("vocoders", {"name": "unit_hifigan", "path": str(tmp_path)})
    cfg = dict(CODE_CFG, upsample_initial_channel=32)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        build_component("vocoders", {"name": "unit_hifigan", "path": str(tmp_path)})


def test_convert_vocoder_command(tmp_path, capsys):
    from diffuspeech.cli import main

    write_codehifigan_folder(tmp_path / "src")
    assert main(["convert-vocoder", str(tmp_path / "src"), str(tmp_path / "out")]) == 0
    assert json.loads(capsys.readouterr().out)["from_format"] == "codehifigan"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["generator.safetensors", "vocoder.json"]
    units = torch.randint(0, NUM_UNITS, (1, 10))
    a = build_component("vocoders", {"name": "unit_hifigan", "path": str(tmp_path / "src"), "speaker_id": 2})
    b = build_component("vocoders", {"name": "unit_hifigan", "path": str(tmp_path / "out"), "speaker_id": 2})
    assert b.format == "diffuspeech"
    torch.testing.assert_close(a.decode(units)[0], b.decode(units)[0])
    assert main(["convert-vocoder", str(tmp_path / "src"), str(tmp_path / "out")]) == 2  # refuses to overwrite
