"""Several processes training one run: ``torchrun --nproc_per_node N -m fghash train …``.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`setup` then joins the
process group (NCCL on CUDA, gloo on CPU) and gives each process its GPU. A single
process (no torchrun) gets a :class:`Dist` of world size 1 whose collectives do nothing,
so the training loop has one code path.

Host-side agreement (barriers, "does every process have images in this batch", rank 0's
work and its outcome) goes through a gloo group beside NCCL: waiting there enqueues no
NCCL work, so a long validation on rank 0 cannot trip NCCL's watchdog, and it needs no
device sync. Work only rank 0 does (:meth:`Dist.on_main`) hands its result or its
failure to every process, so an error there stops the whole job instead of leaving the
others waiting.
"""

from __future__ import annotations

import atexit
import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from fghash.errors import FghashError

__all__ = ["Dist", "setup", "requested_world_size"]

T = TypeVar("T")

# How long the other processes wait for rank 0's work (validation, writing files).
HOST_TIMEOUT = datetime.timedelta(hours=2)


def requested_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 without torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise FghashError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number.") from None


@dataclass
class Dist:
    """This process's place in the group: ``rank`` of ``world``; rank 0 writes files."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    host_group: Any = None  # the gloo group for host-side agreement (None: the default one)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over the processes, in place (a no-op alone)."""
        if self.active:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t

    def broadcast(self, t: torch.Tensor, src: int = 0) -> torch.Tensor:
        if self.active:
            torch.distributed.broadcast(t, src)
        return t

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier(group=self.host_group)

    def host_sum(self, n: int) -> int:
        """Sum of a host-side count over the processes (every process must call it)."""
        if not self.active:
            return n
        t = torch.tensor([n], dtype=torch.int64)
        torch.distributed.all_reduce(t, group=self.host_group)
        return int(t.item())

    def on_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` run by rank 0, its (picklable) result returned in every process; if it
        raises, rank 0 raises its error and every other process a :class:`FghashError`
        (every process must call it)."""
        if not self.active:
            return fn()
        result: Any = None
        error: BaseException | None = None
        if self.main:
            try:
                result = fn()
            except BaseException as e:  # handed to the others, then raised here too
                error = e
        box = [None if error is None else f"{type(error).__name__}: {error}", result]
        torch.distributed.broadcast_object_list(box, src=0, group=self.host_group)
        if error is not None:
            raise error
        if box[0] is not None:
            raise FghashError(f"process 0 stopped ({box[0][:300]}); every process stops.")
        return box[1]

    def any_true(self, flag: bool, device: Any) -> bool:
        """Whether ``flag`` is true in any process (every process must call it)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        return bool(self.all_reduce_sum(t).item() > 0)


_host_group: Any = None


def _destroy() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the torchrun group when ``WORLD_SIZE > 1``; returns it and this process's device."""
    world = requested_world_size()
    if world == 1:
        return Dist(), device
    import torch.distributed as td

    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise FghashError(
                f"torchrun started {world} processes but this machine has "
                f"{torch.cuda.device_count()} GPU(s); lower --nproc_per_node."
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    global _host_group
    if not td.is_initialized():  # one group for the process's life (train_many: several runs)
        cuda = device.type == "cuda"
        td.init_process_group("nccl" if cuda else "gloo", timeout=None if cuda else HOST_TIMEOUT)
        atexit.register(_destroy)
    if _host_group is None and td.get_backend() != "gloo":
        _host_group = td.new_group(backend="gloo", timeout=HOST_TIMEOUT)
    return Dist(rank=rank, world=world, local_rank=local, host_group=_host_group), device
