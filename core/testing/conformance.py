"""Invariants every implementation of a kind must keep, checked on an instance.

    from diffuspeech import build_component
    from diffuspeech.testing import check_component

    def test_my_vocoder_conforms():
        check_component("vocoders", build_component("vocoders", {"name": "tone", "num_units": 100}))

Each check raises :class:`ConformanceError` naming the component and the broken rule; the
built-ins run the same checks in the framework's own test-suite (``tests/test_conformance.py``).
The checks use small random inputs from a seeded generator, so they are fast and repeatable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..attention import policy_mask, probe_canvas
from ..modality import MODALITY_CODE, SPECIAL, SPEECH, TEXT

__all__ = ["CHECKS", "ConformanceError", "check_component"]


class ConformanceError(AssertionError):
    """A component that breaks a rule of its kind's contract."""


def _fail(component: Any, rule: str) -> None:
    raise ConformanceError(f"{type(component).__name__}: {rule}")


def _canvases(generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(modality, valid)`` ``[B, L]`` pairs: the probe canvas and random mixed, padded ones."""
    out = [probe_canvas()]
    codes = torch.tensor([MODALITY_CODE[SPECIAL], MODALITY_CODE[TEXT], MODALITY_CODE[SPEECH]])
    for length in (1, 7, 33):
        modality = codes[torch.randint(0, 3, (3, length), generator=generator)]  # [3, L]
        lengths = torch.tensor([length, max(1, length // 2), 1])  # [3]
        valid = torch.arange(length)[None, :] < lengths[:, None]  # [3, L]
        out.append((modality, valid))
    return out


# --------------------------------------------------------------------------- schedulers
def check_scheduler(schedule: Any, **_: Any) -> None:
    """gamma(0) = 0, gamma(1) = 1, values in [0, 1], non-decreasing in t, for text and speech;
    ``reveal_counts`` rows are >= 0 and sum to the masked count."""
    t = torch.linspace(0.0, 1.0, 101)  # [101]
    for modality in (TEXT, SPEECH):
        gamma = schedule.mask_prob(t, modality)  # [101]
        if gamma.shape != t.shape:
            _fail(schedule, f"mask_prob(t [{t.numel()}], {modality!r}) has shape {tuple(gamma.shape)}, expected t's shape")
        if not bool(torch.isfinite(gamma).all()) or bool((gamma < 0).any()) or bool((gamma > 1).any()):
            _fail(schedule, f"mask_prob({modality!r}) leaves [0, 1]")
        if abs(float(gamma[0])) > 1e-6 or abs(float(gamma[-1]) - 1.0) > 1e-6:
            _fail(schedule, f"{modality}: gamma(0) = {float(gamma[0]):g} and gamma(1) = {float(gamma[-1]):g}; expected 0 and 1")
        if bool((gamma[1:] < gamma[:-1] - 1e-6).any()):
            _fail(schedule, f"{modality}: gamma(t) decreases somewhere in [0, 1]; a mask schedule must be non-decreasing in t")
        masked = torch.tensor([0, 1, 5, 64])  # [4]
        for steps in (1, 3, 16):
            counts = schedule.reveal_counts(masked, steps, modality)  # [4, steps]
            if counts.shape != (4, steps) or bool((counts < 0).any()) or not torch.equal(counts.sum(dim=1), masked):
                _fail(schedule, f"{modality}: reveal_counts({masked.tolist()}, {steps}) = {counts.tolist()}; rows must be >= 0 and sum to the masked count")


# --------------------------------------------------------------------------- samplers
def check_sampler(sampler: Any, **_: Any) -> None:
    """``select`` returns ``[B, L]`` bool, never a -inf position, and at least one position in
    every row that has an eligible one and asks for ``num_to_reveal >= 1``."""
    g = torch.Generator().manual_seed(0)
    for batch, length in ((1, 1), (4, 9), (3, 40)):
        conf = torch.rand(batch, length, generator=g)  # [B, L]
        conf[torch.rand(batch, length, generator=g) < 0.4] = float("-inf")
        if batch > 1:
            conf[-1] = float("-inf")  # a row with nothing eligible
        for k in (0, 1, length):
            num = torch.full((batch,), k, dtype=torch.long)  # [B]
            stats = None
            if getattr(sampler, "needs_stats", ()):
                stats = {name: torch.where(torch.isfinite(conf), torch.rand(conf.shape, generator=g), float("nan")) for name in sampler.needs_stats}
                chosen = sampler.select(conf.clone(), num, torch.Generator().manual_seed(1), stats=stats)
            else:
                chosen = sampler.select(conf.clone(), num, torch.Generator().manual_seed(1))
            if not isinstance(chosen, torch.Tensor) or chosen.dtype != torch.bool or chosen.shape != conf.shape:
                _fail(sampler, f"select must return a [B, L] bool tensor, got {getattr(chosen, 'dtype', type(chosen))} {tuple(getattr(chosen, 'shape', ()))}")
            if bool((chosen & torch.isinf(conf)).any()):
                _fail(sampler, "select revealed a position whose confidence is -inf")
            eligible = torch.isfinite(conf).any(dim=1) & (num > 0)  # [B] rows that ask for a reveal and can have one
            if bool((eligible & ~chosen.any(dim=1)).any()):
                _fail(sampler, f"select revealed nothing in a row with eligible positions (num_to_reveal={k}); decoding would stall")


# --------------------------------------------------------------------------- attention
def check_attention(policy: Any, **_: Any) -> None:
    """``mask`` returns ``[B, 1, L, L]`` bool; every query row allows at least one key; a valid
    query never attends to a padding key."""
    for modality, valid in _canvases(torch.Generator().manual_seed(0)):
        b, length = modality.shape
        target = valid & (torch.arange(length)[None, :] >= length // 3)  # the last two thirds are targets
        mask = policy_mask(policy, modality, valid, target)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (b, 1, length, length):
            got = f"{getattr(mask, 'dtype', type(mask))} {tuple(getattr(mask, 'shape', ()))}"
            _fail(policy, f"mask must be [B, 1, L, L] bool = [{b}, 1, {length}, {length}], got {got}")
        if not bool(mask.any(dim=-1).all()):
            _fail(policy, "a query row allows no key: softmax would see an all -inf row")
        leaks = mask[:, 0] & valid[:, :, None] & ~valid[:, None, :]  # [B, L, L] valid query -> padding key
        if bool(leaks.any()):
            _fail(policy, "a real position attends to a padding key")


# --------------------------------------------------------------------------- noisers
def check_noiser(noiser: Any, scheduler: Any = None, **_: Any) -> None:
    """``masked`` is a subset of ``target``; ``p_mask`` lies in (0, 1] wherever a position is masked."""
    from ..compose import build_component

    scheduler = scheduler if scheduler is not None else build_component("schedulers", "linear", "scheduler")
    g = torch.Generator().manual_seed(0)
    modality, valid = probe_canvas()  # [2, 16]
    target = valid & (torch.rand(modality.shape, generator=g) < 0.7)  # [2, 16]
    for t in (torch.tensor([1e-3, 0.5]), torch.tensor([1.0, 1.0])):
        masked, p_mask = noiser(target, modality, t, scheduler, torch.Generator().manual_seed(1))
        if masked.shape != target.shape or masked.dtype != torch.bool or p_mask.shape != target.shape:
            _fail(noiser, f"must return (masked [B, L] bool, p_mask [B, L]); got {tuple(masked.shape)} {masked.dtype}, {tuple(p_mask.shape)}")
        if bool((masked & ~target).any()):
            _fail(noiser, "masked a position outside target (a condition or padding)")
        p = p_mask[masked]
        if bool(((p <= 0) | (p > 1) | ~torch.isfinite(p)).any()):
            _fail(noiser, "p_mask must be in (0, 1] at every masked position (the loss divides by it)")


# --------------------------------------------------------------------------- vocoders
def check_vocoder(vocoder: Any, **_: Any) -> None:
    """``decode`` of valid units gives finite audio whose sample lengths grow with the unit
    lengths at one rate (``sample_rate / frame_rate`` when the vocoder declares ``frame_rate``);
    an out-of-range unit is refused with a ValueError before any work."""
    k = int(vocoder.num_units)
    g = torch.Generator().manual_seed(0)
    units = torch.randint(0, k, (2, 24), generator=g)  # [2, 24]
    lengths = torch.tensor([24, 12])  # [2]
    wav, samples = vocoder.decode(units, lengths)
    if wav.dim() != 2 or wav.shape[0] != 2 or samples.shape != (2,):
        _fail(vocoder, f"decode must return (waveform [B, samples], lengths [B]), got {tuple(wav.shape)}, {tuple(samples.shape)}")
    if not bool(torch.isfinite(wav).all()):
        _fail(vocoder, "decode produced NaN or inf samples")
    if int(samples.max()) > wav.shape[1] or bool((samples <= 0).any()):
        _fail(vocoder, f"sample lengths {samples.tolist()} must be > 0 and fit in the {wav.shape[1]} samples returned")
    per_unit = samples.double() / lengths.double()  # [2]
    if abs(float(per_unit[0] - per_unit[1])) > 1.0 + 0.02 * float(per_unit[0]):
        _fail(vocoder, f"samples per unit differ between rows ({per_unit.tolist()}): output length must follow the unit lengths")
    frame_rate = getattr(vocoder, "frame_rate", None)
    if frame_rate and not getattr(vocoder, "predicts_durations", False):
        expected = float(vocoder.sample_rate) / float(frame_rate)
        if abs(float(per_unit[0]) - expected) > 0.02 * expected:
            _fail(vocoder, f"{float(per_unit[0]):.1f} samples per unit, but sample_rate / frame_rate = {expected:.1f}")
    try:
        vocoder.decode(torch.full((1, 4), k, dtype=torch.long), None)
    except ValueError:
        pass
    else:
        _fail(vocoder, f"decode accepted unit id {k} (num_units = {k}); out-of-range ids must raise a ValueError")


# --------------------------------------------------------------------------- tokenizers
def check_tokenizer(tokenizer: Any, **_: Any) -> None:
    """``encode`` gives ids in [0, num_units) and about ``frame_rate`` units per second of audio
    (within 2 frames), with per-row lengths that follow the waveform lengths."""
    sr, rate, k = int(tokenizer.sample_rate), float(tokenizer.frame_rate), int(tokenizer.num_units)
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(2, sr, generator=g)  # [2, 1 s]
    lengths = torch.tensor([sr, sr // 2])  # [2]
    units, unit_lengths = tokenizer.encode(wav, lengths)
    if units.dim() != 2 or units.shape[0] != 2 or unit_lengths.shape != (2,):
        _fail(tokenizer, f"encode must return (units [B, frames], lengths [B]), got {tuple(units.shape)}, {tuple(unit_lengths.shape)}")
    if units.dtype != torch.long:
        _fail(tokenizer, f"units must be long ids, got {units.dtype}")
    for row, seconds in enumerate((1.0, 0.5)):
        n = int(unit_lengths[row])
        valid = units[row, :n]
        if n and (int(valid.min()) < 0 or int(valid.max()) >= k):
            _fail(tokenizer, f"row {row}: unit ids outside [0, {k})")
        if not getattr(getattr(tokenizer, "config", None), "dedup", False) and abs(n - seconds * rate) > 2:
            _fail(tokenizer, f"{seconds:g} s of audio gave {n} units; frame_rate {rate:g} means about {seconds * rate:g}")


# --------------------------------------------------------------------------- backbones
def check_backbone(backbone: Any, **_: Any) -> None:
    """``hidden_states`` is ``[B, L, hidden_size]``, ``logits`` ``[..., vocab_size]``,
    ``forward(logits_at=...)`` scores only the selected positions, and a causal mask is obeyed
    (a later token never changes an earlier state)."""
    backbone.eval()
    v, d = int(backbone.vocab_size), int(backbone.hidden_size)
    length = min(12, int(backbone.max_seq_len))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, v, (2, length), generator=g)  # [2, L]
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool))[None, None].expand(2, 1, length, length)  # [2, 1, L, L]
    with torch.no_grad():
        hidden = backbone.hidden_states(ids, None)
        if tuple(hidden.shape) != (2, length, d):
            _fail(backbone, f"hidden_states must be [B, L, hidden_size] = [2, {length}, {d}], got {tuple(hidden.shape)}")
        logits = backbone.logits(hidden[:, :2])
        if tuple(logits.shape) != (2, 2, v):
            _fail(backbone, f"logits of [2, 2, {d}] must be [2, 2, vocab_size={v}], got {tuple(logits.shape)}")
        at = torch.zeros(2, length, dtype=torch.bool)
        at[0, 1], at[1, -1] = True, True
        picked = backbone(ids, None, logits_at=at)
        if tuple(picked.shape) != (2, v):
            _fail(backbone, f"forward(logits_at=2 positions) must be [2, vocab_size], got {tuple(picked.shape)}")
        before = backbone.hidden_states(ids, causal)
        changed = ids.clone()
        changed[:, -1] = (changed[:, -1] + 1) % v
        after = backbone.hidden_states(changed, causal)
        if not torch.allclose(before[:, :-1].float(), after[:, :-1].float(), atol=1e-4, rtol=1e-4):
            _fail(backbone, "under a causal attention_mask, changing the last token changed earlier hidden states")
        if getattr(backbone, "supports_inputs_embeds", False):  # the embeddings path is the lookup when given the lookup
            via = backbone.hidden_states(ids, None, inputs_embeds=backbone.embed_tokens(ids))
            if not torch.allclose(via.float(), hidden.float(), atol=1e-5, rtol=1e-5):
                _fail(backbone, "hidden_states(ids, inputs_embeds=embed_tokens(ids)) differs from hidden_states(ids)")


# --------------------------------------------------------------------------- encoders and adapters
def _clips(sample_rate: int, seconds: tuple[float, ...] = (0.5, 0.3)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([int(s * sample_rate) for s in seconds])  # [B]
    audio = 0.1 * torch.randn(len(seconds), int(lengths.max()), generator=g)  # [B, S]
    audio[1, int(lengths[1]):] = 0.0
    return audio, lengths


def check_encoder(encoder: Any, **_: Any) -> None:
    """``forward`` gives ``num_layers`` finite ``[B, T, feature_size]`` layers, lengths equal to
    ``output_lengths``, T their maximum; padding does not change a row's valid frames; frozen
    unless ``trainable``."""
    encoder.eval()
    audio, lengths = _clips(int(encoder.sample_rate))
    with torch.no_grad():
        out = encoder(audio, lengths)
        alone = encoder(audio[1:, : int(lengths[1])], lengths[1:])
    want = encoder.output_lengths(lengths)
    if out.lengths.tolist() != want.tolist():
        _fail(encoder, f"forward's lengths {out.lengths.tolist()} differ from output_lengths {want.tolist()}")
    if len(out.hidden) != int(encoder.num_layers):
        _fail(encoder, f"forward returned {len(out.hidden)} layers, num_layers says {encoder.num_layers}")
    for i, h in enumerate(out.hidden):
        if tuple(h.shape) != (2, int(want.max()), int(encoder.feature_size)) or not bool(torch.isfinite(h).all()):
            _fail(encoder, f"layer {i} must be finite [B, T, feature_size] = [2, {int(want.max())}, {encoder.feature_size}], got {tuple(h.shape)}")
    n = int(want[1])
    if not torch.allclose(out.hidden[-1][1, :n].float(), alone.hidden[-1][0, :n].float(), atol=1e-4, rtol=1e-3):
        _fail(encoder, "a padded row's valid frames differ from the same clip encoded alone")
    if not encoder.trainable and any(p.requires_grad for p in encoder.parameters()):
        _fail(encoder, "trainable is False but some parameters require gradients (an encoder is frozen by default)")


def check_adapter(adapter: Any, **_: Any) -> None:
    """``forward`` on ``[B, T, input_size]`` layers gives ``[B, T', output_size]`` embeddings and
    the lengths ``output_lengths`` promises; gradients reach its parameters."""
    from ..encoder import EncoderOutput

    g = torch.Generator().manual_seed(0)
    frames = torch.tensor([13, 7])  # [B]
    layers = max(abs(i) + (0 if i < 0 else 1) for i in adapter.layers)
    hidden = [torch.randn(2, 13, int(adapter.input_size), generator=g) for _ in range(max(1, layers))]
    emb, n = adapter(EncoderOutput(hidden=hidden, lengths=frames))
    if n.tolist() != adapter.output_lengths(frames).tolist():
        _fail(adapter, f"forward's lengths {n.tolist()} differ from output_lengths {adapter.output_lengths(frames).tolist()}")
    if emb.dim() != 3 or emb.shape[0] != 2 or emb.shape[1] < int(n.max()) or emb.shape[2] != int(adapter.output_size):
        _fail(adapter, f"embeddings must be [B, T' >= max length, output_size={adapter.output_size}], got {tuple(emb.shape)}")
    emb.float().square().mean().backward()
    if not any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in adapter.parameters()):
        _fail(adapter, "no gradient reaches the adapter's parameters")


# --------------------------------------------------------------------------- objectives
def check_objective(objective: Any, backbone: Any = None, **_: Any) -> None:
    """After ``prepare``, ``loss`` is a finite scalar that back-propagates into the backbone, and
    ``dev_loss`` at a fixed t is a finite scalar."""
    from ..compose import build_component
    from ..formats import collate, layout, parse_tasks
    from ..objective import ObjectiveContext
    from ..vocab import Vocab, VocabConfig

    vocab = Vocab(VocabConfig(text_size=40, num_units=16))
    tasks = parse_tasks(None)
    example = {"question_speech": [1, 2, 3, 4], "thinking": [5, 6, 7], "answer_speech": [8, 9, 10], "speech": [1, 2], "text": [3, 4]}
    seqs = [layout(name, tasks[name], example, vocab) for name in ("s2s", "asr", "tts")]
    batch = collate(seqs, vocab.pad_id)  # [3, L]
    if backbone is None:
        backbone = build_component("backbones", {"name": "llada", "preset": "tiny", "vocab_size": vocab.size, "d_model": 32,
                                                 "n_layers": 1, "n_heads": 2, "mlp_hidden_size": 64}, "backbone")
    attention = build_component("attention", "causal", "attention")
    objective.prepare(ObjectiveContext(build_component("schedulers", "linear"), build_component("noisers", "iid"),
                                       vocab.mask_id, attention, "causal"))
    mask = policy_mask(attention, batch["modality"], batch["valid"], batch["target"])  # [3, 1, L, L]
    backbone.zero_grad()
    out = objective.loss(backbone, batch, torch.Generator().manual_seed(0), mask)
    if out.loss.dim() != 0 or not bool(torch.isfinite(out.loss)):
        _fail(objective, f"loss must be a finite scalar, got {out.loss}")
    out.loss.backward()
    if not any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in backbone.parameters()):
        _fail(objective, "the loss does not reach the backbone's parameters")
    with torch.no_grad():
        dev = objective.dev_loss(backbone, batch, 0.5, torch.Generator().manual_seed(0), mask)
    if dev.dim() != 0 or not bool(torch.isfinite(dev)):
        _fail(objective, f"dev_loss must be a finite scalar, got {dev}")


CHECKS: dict[str, Callable[..., None]] = {  # kind -> the check every registered component of it must pass
    "schedulers": check_scheduler,
    "samplers": check_sampler,
    "attention": check_attention,
    "noisers": check_noiser,
    "vocoders": check_vocoder,
    "tokenizers": check_tokenizer,
    "backbones": check_backbone,
    "objectives": check_objective,
    "encoders": check_encoder,
    "adapters": check_adapter,
}


def check_component(kind: str, component: Any, **context: Any) -> None:
    """Run ``kind``'s conformance check on ``component`` (raises :class:`ConformanceError`).

    ``context`` passes what a check may need from outside: ``scheduler=`` for noisers,
    ``backbone=`` for objectives."""
    if kind not in CHECKS:
        raise KeyError(f"no conformance check for kind {kind!r}; kinds with checks: {', '.join(CHECKS)}")
    CHECKS[kind](component, **context)
