"""Continuous speech on the canvas (DIFFA): a ``modality: speech_features`` condition segment.

    tasks:
      s2t:
        token: "<|s2t|>"
        segments:
          - {field: question_speech, modality: speech_features, role: condition}
          - {field: answer_text, modality: text, role: target}
    encoder: {name: whisper, path: whisper-small/}
    adapters:
      semantic: {name: semantic}

The segment's audio goes through the ``encoder`` and every entry of ``adapters`` (concatenated in
the mapping's order); the result takes ``slots(samples)`` canvas positions between the text
start/end tokens (the embeddings stand where a text LM would read the question). Those positions
hold the pad id; :class:`SplicedBackbone` gives the backbone their embeddings through its
embeddings path (``supports_inputs_embeds``) at every forward: training, every decoder, the KV
cache, and classifier-free guidance (its unconditional pass masks them: a position whose id is
the mask id reads the mask embedding, as text conditions do).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .backbone import supports_inputs_embeds
from .errors import ConfigError

__all__ = ["SpeechFeatures", "SplicedBackbone", "check_speech_features", "fill_adapter_sizes"]


class SpeechFeatures:
    """The model's encoder and adapters as one front end: audio clips -> canvas embeddings."""

    def __init__(self, encoder: Any, adapters: nn.ModuleDict | dict[str, Any]) -> None:
        self.encoder, self.adapters = encoder, adapters

    @classmethod
    def of(cls, model: Any) -> Optional[SpeechFeatures]:
        """The front end of a :class:`~diffuspeech.model.SpeechDiffusionModel` (or a TrainModule), or None."""
        encoder, adapters = getattr(model, "encoder", None), getattr(model, "adapters", None)
        return None if encoder is None or not adapters else cls(encoder, adapters)

    @property
    def sample_rate(self) -> int:
        return int(self.encoder.sample_rate)

    def check_audio(self, num_samples: int, where: str) -> None:
        self.encoder.check_audio(int(num_samples), where)

    def slots(self, num_samples: int) -> int:
        """Canvas positions a clip of ``num_samples`` samples takes."""
        frames = self.encoder.output_lengths(torch.tensor([int(num_samples)]))  # [1]
        return int(sum(int(a.output_lengths(frames)[0]) for a in self.adapters.values()))

    def embed(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``audio [N, S]`` (right-padded) with ``lengths [N]`` -> ``[sum of slots, D]``: clip 0's
        embeddings (adapters in order), then clip 1's, ..., the row-major order of the canvas slots."""
        frozen = not any(p.requires_grad for p in self.encoder.parameters())
        with torch.no_grad() if frozen else torch.enable_grad():
            features = self.encoder(audio, lengths)
        outs, valid = [], []
        for adapter in self.adapters.values():
            emb, n = adapter(features)  # [N, T_a, D], [N]
            outs.append(emb)
            valid.append(torch.arange(emb.shape[1], device=emb.device)[None, :] < n.to(emb.device)[:, None])  # [N, T_a]
        emb, ok = torch.cat(outs, dim=1), torch.cat(valid, dim=1)  # [N, T, D], [N, T]
        want = sum(self.slots(int(n)) for n in lengths.tolist())
        if int(ok.sum()) != want:
            raise RuntimeError(f"the adapters produced {int(ok.sum())} embeddings for {want} canvas slots: an adapter's "
                               "output_lengths disagrees with what its forward returns")
        return emb[ok]  # [sum slots, D]


class SplicedBackbone:
    """A view of ``backbone`` whose ``where`` positions read ``embeds`` instead of their token embedding.

    Implements what the engines call (``hidden_states``, the KV-cache pair, ``logits`` and the
    rest by delegation). Called with ``R = k * B`` rows (classifier-free guidance doubles the
    batch) it repeats the embeddings; a window call gathers them at the window's positions."""

    def __init__(self, backbone: Any, where: torch.Tensor, embeds: torch.Tensor, mask_id: int) -> None:
        if not supports_inputs_embeds(backbone):
            raise ConfigError(
                f"backbone {type(backbone).__name__} has no embeddings path (supports_inputs_embeds / embed_tokens / "
                "hidden_states(..., inputs_embeds=...)), which a task segment with modality: speech_features needs; use a "
                "backbone that has it (llada, hf_decoder) or give the speech as units (modality: speech)"
            )
        b, length = where.shape  # [B, L] bool
        if int(where.sum()) != embeds.shape[0]:
            raise ValueError(f"{int(where.sum())} speech_features positions but {embeds.shape[0]} embeddings")
        self.backbone, self.mask_id, self.where = backbone, int(mask_id), where
        rows, cols = where.nonzero(as_tuple=True)
        self.dense = embeds.new_zeros(b, length, embeds.shape[-1]).index_put((rows, cols), embeds)  # [B, L, D]

    def rebound(self, backbone: Any) -> SplicedBackbone:
        """The same speech embeddings (detached) spliced into another backbone (e.g. a frozen teacher copy)."""
        view = object.__new__(SplicedBackbone)
        view.__dict__.update(self.__dict__, backbone=backbone, dense=self.dense.detach())
        return view

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["backbone"], name)

    def _embeds(self, ids: torch.Tensor, positions: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.backbone.embed_tokens(ids)  # [R, W, D]
        reps, rem = divmod(ids.shape[0], self.where.shape[0])
        if rem or reps == 0:
            raise ValueError(f"a forward of {ids.shape[0]} rows over a batch of {self.where.shape[0]}: rows must be whole copies of the batch")
        where, dense = self.where.repeat(reps, 1), self.dense.repeat(reps, 1, 1)  # [R, L], [R, L, D]
        if positions is not None:
            where = where.gather(1, positions)  # [R, W]
            dense = dense.gather(1, positions[..., None].expand(-1, -1, dense.shape[-1]))  # [R, W, D]
        use = where & (ids != self.mask_id)  # the unconditional CFG pass masks the condition: mask embedding there
        return torch.where(use[..., None], dense.to(x.dtype), x)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.backbone.hidden_states(input_ids, attention_mask, inputs_embeds=self._embeds(input_ids))

    def hidden_states_and_cache(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None):
        return self.backbone.hidden_states_and_cache(input_ids, attention_mask, inputs_embeds=self._embeds(input_ids))

    def hidden_states_cached(self, input_ids, positions, cache, attention_mask=None) -> torch.Tensor:
        return self.backbone.hidden_states_cached(input_ids, positions, cache, attention_mask, inputs_embeds=self._embeds(input_ids, positions))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.backbone.logits(hidden)


def fill_adapter_sizes(model: Any, path: str, node: Any) -> DictConfig:
    """The adapter node at ``path`` with ``input_size`` / ``output_size`` filled from the encoder's
    feature width and the backbone's hidden size (written back into ``model.config``), or a
    ConfigError naming both keys when a given value does not fit."""
    encoder, backbone = model.components.get("encoder"), model.components.get("backbone")
    if encoder is None:
        raise ConfigError(f"{path}: adapters read an encoder's features, but the config has no `encoder` section; add one (e.g. encoder: {{name: mel}})")
    if backbone is None:
        raise ConfigError(f"{path}: adapters write backbone embeddings, but the config has no `backbone` section")
    node = OmegaConf.create({"name": node}) if isinstance(node, str) else node
    for key, have, what in (("input_size", int(encoder.feature_size), "the encoder's feature width"),
                            ("output_size", int(backbone.hidden_size), "the backbone's hidden size")):
        given = node.get(key)
        if given is None:
            node[key] = have
        elif int(given) != have:
            raise ConfigError(f"{path}.{key}: {given} does not match {what} ({have}, from {'encoder' if key == 'input_size' else 'backbone'}); "
                              f"set {path}.{key}={have} or leave it unset (null) to take it from there")
    layers = node.get("layers")
    for index in list(layers) if layers is not None else []:
        if not -encoder.num_layers <= int(index) < encoder.num_layers:
            raise ConfigError(f"{path}.layers: layer {index} does not exist; the encoder ({type(encoder).__name__}) returns layers "
                              f"0..{encoder.num_layers - 1} (0 = its input embedding, -1 = the last)")
    return node


def check_speech_features(model: Any) -> None:
    """A task with a ``speech_features`` segment needs an encoder, adapters and a backbone with the
    embeddings path; raise ConfigError naming the task and the missing piece."""
    from .modality import SPEECH_FEATURES

    users = [f"tasks.{name}.segments.{i}" for name, task in model.tasks.items() for i, s in enumerate(task.segments) if s.modality == SPEECH_FEATURES]
    if not users:
        return
    if model.encoder is None or not model.adapters:
        missing = "encoder" if model.encoder is None else "adapters"
        raise ConfigError(f"{users[0]}: modality speech_features needs an `encoder` and `adapters` section, and the config has no `{missing}`; "
                          "add them (e.g. encoder: {name: mel}, adapters: {semantic: {name: semantic}}) or use modality: speech (units)")
    if model.backbone is not None and not supports_inputs_embeds(model.backbone):
        raise ConfigError(f"{users[0]}: modality speech_features needs a backbone with an embeddings path, and backbone "
                          f"{type(model.backbone).__name__} has none (supports_inputs_embeds); use llada or hf_decoder")
