"""A view of chosen items of a data set that reports each item's position in the view."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

__all__ = ["PositionDataset"]


class PositionDataset(Dataset):
    """Items ``indices`` of ``ds`` as ``(image, label, position)``; ``None`` stays ``None``.

    ``ds[i]`` returns ``(image, label, index)`` or ``None`` for an unreadable image (the
    :mod:`fghash.data` convention with ``skip_corrupt=True``). The position (0..len-1)
    lets a batch be matched to rows of per-view arrays (relaxed codes U, similarities S)
    even after unreadable items were dropped by ``collate_skip_none``.
    """

    def __init__(self, ds: Any, indices: Sequence[int] | np.ndarray) -> None:
        self.ds = ds
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> Any:
        item = self.ds[int(self.indices[j])]
        if item is None:
            return None
        return item[0], item[1], j
