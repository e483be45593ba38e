"""Peak bytes of tensor memory allocated inside a ``with`` block, on any device.

Every tensor an aten operation returns is seen (a TorchDispatchMode); a memory block is
counted from the first tensor on it until the last tensor on it is freed (views share
their base's block). Tensors made before the block are not counted.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class PeakBytes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}  # block address -> [bytes, tensors on it]
        self.now = self.peak = 0

    def _release(self, ptr: int) -> None:
        entry = self.live[ptr]
        entry[1] -= 1
        if entry[1] == 0:
            self.now -= entry[0]
            del self.live[ptr]

    def _seen(self, t: torch.Tensor, inputs: set[int]) -> None:
        storage = t.untyped_storage()
        ptr, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or (ptr in inputs and ptr not in self.live):
            return  # empty, or a view of a tensor made before the block
        if ptr not in self.live:
            self.live[ptr] = [size, 0]
            self.now += size
            self.peak = max(self.peak, self.now)
        self.live[ptr][1] += 1
        weakref.finalize(t, self._release, ptr)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat = [*args, *(kwargs or {}).values()]
        flat += [x for a in flat if isinstance(a, (tuple, list)) for x in a]
        inputs = {a.untyped_storage().data_ptr() for a in flat if isinstance(a, torch.Tensor)}
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self._seen(t, inputs)
        return out
