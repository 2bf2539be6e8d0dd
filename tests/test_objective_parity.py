"""The masked-diffusion objective against LLaDA's published forward process and losses.

Reference: LLaDA's GUIDELINES.md (``forward_process``; pretraining loss = sum(CE / p_mask) /
(B * L); SFT loss: prompt never masked, each token divided by its answer length, / B). With
the ``linear`` schedule, the ``iid`` noiser and the same generator, our objective draws the
same t and the same mask and must give the same loss and gradients.
"""

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffuspeech.backbone import Backbone
from diffuspeech.compose import build_component
from diffuspeech.formats import DEFAULT_TASKS, collate, layout, parse_tasks
from diffuspeech.modality import MODALITY_CODE, TEXT
from diffuspeech.objective import ObjectiveContext, build_objective
from diffuspeech.plugins.objectives.diffusion import MaskedDiffusionObjective
from diffuspeech.vocab import Vocab, VocabConfig

MASK = 60
V = 64


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: exact, reproducible float order


class TinyEncoder(Backbone):
    """Embedding -> one bidirectional transformer layer -> untied head."""

    @dataclass
    class Config:
        vocab: int = V
        width: int = 16

    def __init__(self, config=None):
        super().__init__(config)
        torch.manual_seed(0)
        self.embed = nn.Embedding(self.config.vocab, self.config.width)
        self.layer = nn.TransformerEncoderLayer(self.config.width, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(self.config.width, self.config.vocab, bias=False)

    vocab_size = property(lambda self: self.config.vocab)
    hidden_size = property(lambda self: self.config.width)
    max_seq_len = property(lambda self: 256)

    def hidden_states(self, input_ids, attention_mask=None):
        return self.layer(self.embed(input_ids))  # [B, L, D]

    def output_head(self):
        return self.head

    def resize_vocab(self, new_size, init="mean"):
        raise NotImplementedError


def forward_process(input_ids, generator, eps=1e-3):
    """LLaDA's forward process, with an explicit generator."""
    b, length = input_ids.shape
    t = torch.rand(b, generator=generator)
    p_mask = (1 - eps) * t + eps
    p_mask = p_mask[:, None].repeat(1, length)
    masked_indices = torch.rand((b, length), generator=generator) < p_mask
    noisy_batch = torch.where(masked_indices, MASK, input_ids)
    return noisy_batch, masked_indices, p_mask


def llada_pretrain_loss(model, input_ids, generator):
    noisy_batch, masked_indices, p_mask = forward_process(input_ids, generator)
    logits = model(noisy_batch)  # [B, L, V]
    token_loss = F.cross_entropy(logits[masked_indices], input_ids[masked_indices], reduction="none") / p_mask[masked_indices]
    return token_loss.sum() / (input_ids.shape[0] * input_ids.shape[1])


def llada_sft_loss(model, input_ids, prompt_lengths, generator):
    noisy_batch, _, p_mask = forward_process(input_ids, generator)
    token_positions = torch.arange(noisy_batch.shape[1]).expand(noisy_batch.size(0), noisy_batch.size(1))
    prompt_mask = token_positions < prompt_lengths.unsqueeze(1)
    noisy_batch[prompt_mask] = input_ids[prompt_mask]
    prompt_mask = prompt_mask.to(torch.int64)
    answer_lengths = torch.sum((1 - prompt_mask), dim=-1, keepdim=True).repeat(1, noisy_batch.shape[1])
    masked_indices = noisy_batch == MASK
    logits = model(noisy_batch)
    token_loss = F.cross_entropy(logits[masked_indices], input_ids[masked_indices], reduction="none") / p_mask[masked_indices]
    return torch.sum(token_loss / answer_lengths[masked_indices]) / input_ids.shape[0]


def objective(normalize: str, logits_on: str = "masked") -> MaskedDiffusionObjective:
    return diffusion({"eps": 1e-3, "normalize": normalize, "logits_on": logits_on})


def diffusion(settings: dict, mask_id: int = MASK) -> MaskedDiffusionObjective:
    return build_objective(
        {"name": "diffusion", **settings},
        ObjectiveContext(build_component("schedulers", "linear"), build_component("noisers", "iid"), mask_id),
    )


def text_batch(ids, target):
    return {
        "ids": ids, "modality": torch.full_like(ids, MODALITY_CODE[TEXT]),
        "target": target, "valid": torch.ones_like(target),
    }


def grads(model):
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("logits_on", ["masked", "all"])
def test_pretraining_loss_and_gradients_match_llada(logits_on):
    model = TinyEncoder()
    ids = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(1))  # [B, L], no mask id inside
    for seed in range(4):
        model.zero_grad()
        ref = llada_pretrain_loss(model, ids, torch.Generator().manual_seed(seed))
        ref.backward()
        ref_grads = grads(model)
        model.zero_grad()
        ours = objective("token", logits_on).loss(model, text_batch(ids, torch.ones_like(ids, dtype=torch.bool)), torch.Generator().manual_seed(seed))
        ours.loss.backward()
        torch.testing.assert_close(ours.loss, ref, rtol=1e-6, atol=1e-6)
        for a, b in zip(grads(model), ref_grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert ours.num_target == ids.numel()


def test_sft_loss_and_gradients_match_llada():
    model = TinyEncoder()
    ids = torch.randint(0, 50, (4, 10), generator=torch.Generator().manual_seed(2))
    prompt_lengths = torch.tensor([3, 5, 1, 6])
    answer = torch.arange(10)[None, :] >= prompt_lengths[:, None]  # [B, L]
    for seed in range(4):
        model.zero_grad()
        ref = llada_sft_loss(model, ids, prompt_lengths, torch.Generator().manual_seed(seed))
        ref.backward()
        ref_grads = grads(model)
        model.zero_grad()
        ours = objective("sequence").loss(model, text_batch(ids, answer), torch.Generator().manual_seed(seed))
        ours.loss.backward()
        torch.testing.assert_close(ours.loss, ref, rtol=1e-6, atol=1e-6)
        for a, b in zip(grads(model), ref_grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class Spy(TinyEncoder):
    """Records the noisy canvas the objective feeds the backbone."""

    def hidden_states(self, input_ids, attention_mask=None):
        self.seen = input_ids.clone()
        return super().hidden_states(input_ids, attention_mask)


def test_selective_masking_never_touches_conditions():
    vocab = Vocab(VocabConfig(text_size=20, num_units=20))  # 20 text + 12 specials + 20 units = 52 ids
    tasks = parse_tasks(DEFAULT_TASKS)
    example = {"question_speech": [1, 2, 3, 4, 5], "thinking": [3, 4, 5], "answer_speech": [7, 8], "speech": [9, 9, 1],
               "text": [1, 2], "question_text": [4, 4, 4], "answer_text": [6]}
    seqs = [layout(name, tasks[name], example, vocab) for name in ("s2s", "asr", "tts", "t2t", "s2t", "lm")]
    batch = collate(seqs, vocab.pad_id)  # [6, L], rows of different lengths
    model = Spy(TinyEncoder.Config(vocab=vocab.size))
    obj = diffusion({"eps": 0.999}, vocab.mask_id)
    touched = torch.zeros_like(batch["ids"], dtype=torch.bool)
    for seed in range(5):  # t ~ U(0.999, 1): nearly every target masked
        out = obj.loss(model, batch, torch.Generator().manual_seed(seed))
        masked = model.seen == vocab.mask_id
        touched |= masked
        assert out.num_masked == int(masked.sum()) > 0
        # conditions, task/start tokens and padding keep their clean ids
        keep = ~batch["target"] | ~batch["valid"]
        assert torch.equal(model.seen[keep], batch["ids"][keep])
        assert not (masked & batch["condition"]).any()
    assert torch.equal(touched, batch["target"] & batch["valid"])  # every target was masked at some point


def test_stratified_times_cover_every_stratum_and_stay_in_range():
    obj = diffusion({"eps": 1e-3, "time_sampling": "stratified"})
    for seed in range(5):
        t = obj.sample_time(8, torch.Generator().manual_seed(seed))  # [8]
        assert bool(((t >= 1e-3) & (t < 1.0)).all())
        strata = torch.sort(((t - 1e-3) / (1 - 1e-3) * 8).floor().long()).values
        assert strata.tolist() == list(range(8))  # one time per eighth of the range
    # the order is shuffled: stratum i is not always row i
    orders = {tuple(obj.sample_time(8, torch.Generator().manual_seed(s)).argsort().tolist()) for s in range(5)}
    assert len(orders) > 1


def test_weighting_none_is_plain_masked_cross_entropy():
    model = TinyEncoder()
    ids = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(3))
    target = torch.ones_like(ids, dtype=torch.bool)
    plain = diffusion({"eps": 1e-3, "weighting": "none"})
    out = plain.loss(model, text_batch(ids, target), torch.Generator().manual_seed(0))
    # redo the same noise draw by hand: same generator order as the objective (t, then the mask)
    g = torch.Generator().manual_seed(0)
    t = 1e-3 + (1 - 1e-3) * torch.rand(3, generator=g)
    masked = torch.rand(3, 12, generator=g) < t[:, None]
    logits = model.head(model.hidden_states(torch.where(masked, MASK, ids)))[masked]
    expected = F.cross_entropy(logits, ids[masked], reduction="sum") / ids.numel()
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("key,value", [("time_sampling", "sobol"), ("weighting", "inverse")])
def test_unknown_objective_options_name_the_key_and_choices(key, value):
    from diffuspeech.compose import ConfigError

    with pytest.raises(ConfigError, match=rf"objective\.{key}: '{value}'; valid: "):
        diffusion({key: value})
