"""What a training run draws from: its data, the seeds, Ω and the batches over Ω.

Every draw comes from the run's seed and where the run is (outer iteration, epoch), never
from what ran before, so a run killed anywhere in an outer iteration and resumed repeats
that iteration exactly (on CPU; CUDA kernels are not all deterministic).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from fghash.errors import FghashError
from fghash.runs.config import TrainConfig
from fghash.util.threads import usable_cores

__all__ = [
    "RankBatches",
    "TrainData",
    "auto_num_workers",
    "derived_seed",
    "rank_seed",
    "sample_omega",
    "seed_all",
    "split_train_indices",
]


def derived_seed(*parts: int) -> int:
    """A seed for one purpose, derived from the run's seed and the purpose's numbers."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def rank_seed(seed: int, rank: int) -> int:
    """The seed of one process's random draws (augmentations): rank 0 keeps ``seed``, so a
    single process draws as it always has; every other rank gets its own."""
    return seed if rank == 0 else derived_seed(seed, 0xA46, rank)


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def auto_num_workers(device: torch.device, world: int = 1) -> int:
    """DataLoader workers when ``num_workers`` is not given: none on CPU (the CPU is busy
    training); on CUDA the machine's CPUs shared by the processes, at most 8 each."""
    if device.type != "cuda":
        return 0
    return max(1, min(8, usable_cores() // max(1, world) - 1))


def split_train_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``0..n-1`` into (database, val) positions; val is a seeded random share."""
    if val_fraction <= 0:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    n_val = max(1, int(round(val_fraction * n)))
    if n_val >= n:
        raise FghashError(
            f"--val-fraction {val_fraction} leaves no training images out of {n}; lower it."
        )
    perm = np.random.default_rng(derived_seed(seed, 0x7A1)).permutation(n)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)


def sample_omega(seed: int, it: int, n_db: int, m: int) -> np.ndarray:
    """Ω of outer iteration ``it``: ``m`` sorted database positions, from the seed and
    ``it`` only."""
    rng = np.random.default_rng(derived_seed(seed, 0x0E, it))
    return np.sort(rng.choice(n_db, size=m, replace=False)).astype(np.int64)


@dataclass
class TrainData:
    """The train split twice (training and evaluation transforms) and its division into
    the database Γ and the held-out validation items."""

    ds: Any  # the train split with the training transform (augmentation)
    ds_eval: Any  # the same items with the evaluation transform
    labels: np.ndarray  # int64 labels of the whole train split
    db_idx: np.ndarray  # int64 [N], positions of the database items
    val_idx: np.ndarray  # int64, positions of the held-out validation items

    @classmethod
    def load(cls, cfg: TrainConfig) -> TrainData:
        from fghash.data import build_transform, load_dataset

        train_tf = build_transform(True, cfg.image_size, resize=cfg.resize, crop=cfg.train_crop)
        eval_tf = build_transform(False, cfg.image_size, resize=cfg.resize)
        ds, ds_eval = (
            load_dataset(
                cfg.dataset,
                cfg.data_root,
                split="train",
                transform=tf,
                skip_corrupt=cfg.skip_corrupt,
            )  # fmt: skip
            for tf in (train_tf, eval_tf)
        )
        labels = np.asarray(ds.labels, dtype=np.int64)
        db_idx, val_idx = split_train_indices(len(labels), cfg.val_fraction, cfg.seed)
        return cls(ds, ds_eval, labels, db_idx, val_idx)

    @property
    def db_labels(self) -> np.ndarray:
        return self.labels[self.db_idx]


class RankBatches(Sampler[list[int]]):
    """One epoch's batches of view positions ``0..m-1``: a permutation seeded by ``seed``
    (set before each epoch) cut into global batches of ``batch_size``, each split between
    the processes (rank r takes items r, r+W, …). A last global batch too small to give
    every process an item is dropped, so all processes take the same number of steps."""

    def __init__(self, m: int, batch_size: int, rank: int = 0, world: int = 1) -> None:
        self.m, self.batch_size, self.rank, self.world = m, batch_size, rank, world
        self.seed = 0

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed)
        # the order DataLoader(shuffle=True, generator=g) takes (it draws a worker seed
        # first), so one process batches as runs made before this sampler existed
        torch.empty((), dtype=torch.int64).random_(generator=g)
        perm = torch.randperm(self.m, generator=g)
        for s in range(0, self.m, self.batch_size):
            batch = perm[s : s + self.batch_size].tolist()
            if len(batch) < self.world:
                return
            yield batch[self.rank :: self.world]

    def __len__(self) -> int:
        full, rest = divmod(self.m, self.batch_size)
        return full + (1 if rest >= self.world else 0)
