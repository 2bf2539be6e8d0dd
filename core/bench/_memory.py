"""Peak bytes of tensors allocated inside a ``with`` block, on any device (exact, not sampled).

A dispatch mode sees every tensor an operator returns (forward and backward), counts each
new storage once, and subtracts it when the storage is freed. Memory that existed before
the block (weights, gradients, optimizer moments) is not counted. Slows the block down:
time separately.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakTensorMemory(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live = 0  # bytes of storages created in the block and still alive
        self.peak = 0
        self._alive: dict[int, weakref.finalize] = {}

    def _freed(self, ptr: int, nbytes: int) -> None:
        self.live -= nbytes
        self._alive.pop(ptr, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr == 0 or ptr in self._alive:
                continue
            if any(t.untyped_storage().data_ptr() == ptr for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)):
                continue  # in-place / view of an input: not a new allocation
            n = storage.nbytes()
            self.live += n
            self.peak = max(self.peak, self.live)
            self._alive[ptr] = weakref.finalize(storage, self._freed, ptr, n)
        return out
