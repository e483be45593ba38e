"""Several processes training one run: ``torchrun --nproc_per_node N -m fghash train …``.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`setup` then joins the
process group (NCCL on CUDA, gloo on CPU) and gives each process its GPU. A single
process (no torchrun) gets a :class:`Dist` of world size 1 whose collectives do nothing,
so the training loop has one code path.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch

from fghash.errors import FghashError

__all__ = ["Dist", "setup", "requested_world_size"]


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
            torch.distributed.barrier()

    def any_true(self, flag: bool, device: Any) -> bool:
        """Whether ``flag`` is true in any process (every process must call it)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        return bool(self.all_reduce_sum(t).item() > 0)


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
    owns = not td.is_initialized()
    if owns:  # one group for the process's life (train_many trains several runs in it)
        td.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_destroy)
    return Dist(rank=rank, world=world, local_rank=local), device
