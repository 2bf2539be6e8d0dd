"""Task-mixture sampling and length-bucketed batches, resumable at any batch.

Every optimizer step takes one *global batch* of ``data.batch_size`` sequences. Batches are
drawn in pools of ``bucket_batches``: each slot of a pool picks a task with the stage's
mixture weights, then the task's next example (tasks are walked in a fresh seeded
permutation per epoch, so every example is seen before any repeats); the pool is sorted by
length, cut into batches and the batches are shuffled. Sequences of similar length share a
batch, so right padding stays small.

The state (pool index, batch within the pool, per-task cursors at the pool's start) is a
small dict saved in training checkpoints: a resumed run draws exactly the same batches.
Every process draws the same global batch and takes its own slice (``shard``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from ..compose import ConfigError


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any printable parts, equal in every process and Python run."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(*parts: Any) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


def normalise_mixture(mixture: dict[str, float], available: dict[str, int], where: str) -> dict[str, float]:
    """Validate weights against the tasks that have examples; returns weights summing to 1."""
    if not mixture:
        mixture = {t: 1.0 for t, n in available.items() if n > 0}
        if not mixture:
            raise ConfigError(f"{where}: no task has any training example; check data.manifest and the rows' tasks")
    for task, w in mixture.items():
        if task not in available:
            raise ConfigError(f"{where}.{task}: no such task; configured tasks: {', '.join(available)}")
        if float(w) < 0:
            raise ConfigError(f"{where}.{task}: weight {w} is negative")
        if float(w) > 0 and available[task] == 0:
            raise ConfigError(
                f"{where}.{task}: weight {w} but the manifest has no usable example for task {task!r} "
                f"(give rows that serve it, map its fields in data.fields.{task}, or set its weight to 0)"
            )
    total = sum(float(w) for w in mixture.values())
    if total <= 0:
        raise ConfigError(f"{where}: all weights are zero")
    return {t: float(w) / total for t, w in mixture.items() if float(w) > 0}


class MixtureBatcher:
    """Yields global batches as lists of ``(task, example index)``."""

    def __init__(
        self,
        lengths: dict[str, Sequence[int]],  # task -> length of each example
        mixture: dict[str, float],  # task -> weight (normalised, > 0)
        batch_size: int,
        bucket_batches: int,
        seed: Any,  # anything derive_seed accepts, e.g. (train.seed, stage index)
    ) -> None:
        self.lengths = {t: list(lengths[t]) for t in mixture}
        self.tasks = sorted(mixture)
        self.weights = torch.tensor([mixture[t] for t in self.tasks], dtype=torch.float64)
        self.batch_size, self.bucket_batches, self.seed = int(batch_size), int(bucket_batches), seed
        self.pool_index = 0
        self.batch_in_pool = 0
        self.cursors: dict[str, list[int]] = {t: [0, 0] for t in self.tasks}  # task -> [epoch, position] at pool start
        self._pool: list[list[tuple[str, int]]] | None = None
        self._next_cursors: dict[str, list[int]] | None = None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"pool_index": self.pool_index, "batch_in_pool": self.batch_in_pool, "cursors": {t: list(c) for t, c in self.cursors.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if sorted(state["cursors"]) != self.tasks:
            raise ValueError(f"data position was saved for tasks {sorted(state['cursors'])}, the stage mixes {self.tasks}")
        self.pool_index, self.batch_in_pool = int(state["pool_index"]), int(state["batch_in_pool"])
        self.cursors = {t: [int(c[0]), int(c[1])] for t, c in state["cursors"].items()}
        self._pool = None

    # ------------------------------------------------------------------ drawing
    def _permutation(self, task: str, epoch: int) -> list[int]:
        n = len(self.lengths[task])
        return torch.randperm(n, generator=generator(self.seed, "perm", task, epoch)).tolist()

    def _build_pool(self) -> None:
        gen = generator(self.seed, "pool", self.pool_index)
        slots = self.batch_size * self.bucket_batches
        picks = torch.multinomial(self.weights, slots, replacement=True, generator=gen).tolist()
        cursors = {t: list(c) for t, c in self.cursors.items()}
        items: list[tuple[str, int]] = []
        perms: dict[tuple[str, int], list[int]] = {}
        for k in picks:
            task = self.tasks[k]
            epoch, pos = cursors[task]
            if (task, epoch) not in perms:
                perms[(task, epoch)] = self._permutation(task, epoch)
            items.append((task, perms[(task, epoch)][pos]))
            pos += 1
            if pos == len(self.lengths[task]):
                epoch, pos = epoch + 1, 0
            cursors[task] = [epoch, pos]
        # sort by length (ties keep the random draw order), cut into batches, shuffle them
        items.sort(key=lambda it: self.lengths[it[0]][it[1]])
        batches = [items[i : i + self.batch_size] for i in range(0, slots, self.batch_size)]
        order = torch.randperm(len(batches), generator=gen).tolist()
        self._pool = [batches[i] for i in order]
        self._next_cursors = cursors

    def next_batch(self) -> list[tuple[str, int]]:
        if self._pool is None:
            self._build_pool()
        assert self._pool is not None and self._next_cursors is not None
        batch = self._pool[self.batch_in_pool]
        self.batch_in_pool += 1
        if self.batch_in_pool == len(self._pool):
            self.pool_index, self.batch_in_pool = self.pool_index + 1, 0
            self.cursors, self._pool = self._next_cursors, None
        return batch


def shard(batch: list, num_chunks: int, index: int) -> list:
    """Chunk ``index`` of ``num_chunks`` contiguous, equal chunks of ``batch``."""
    if len(batch) % num_chunks:
        raise ConfigError(
            f"data.batch_size={len(batch)} is not divisible by processes x train.grad_accum = {num_chunks}; "
            f"choose a batch size that is a multiple of {num_chunks}"
        )
    size = len(batch) // num_chunks
    return batch[index * size : (index + 1) * size]
