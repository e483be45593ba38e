"""Item metadata beside an index: positions 0..N-1 → ids, labels and paths.

FAISS returns database *positions*; the codes file's ``ids`` (unique int64, not
necessarily 0..N-1), ``labels`` and ``paths`` travel with the index in ``items.h5``
and turn result rows into readable records.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fghash.codes import Split
from fghash.errors import FghashError

__all__ = ["ItemMeta", "write_items", "read_items", "result_rows", "search_items"]

ITEMS_FORMAT = "fghash.items"


@dataclass
class ItemMeta:
    """Metadata of the N indexed items, in database order."""

    ids: np.ndarray  # int64 [N]
    labels: np.ndarray | None = None  # int64 [N], or uint8 [N, C] multi-hot
    paths: list[str] | None = None  # image paths relative to the data set root
    source: dict[str, Any] | None = None  # codes file it came from: path, split, checksum

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int64)
        if self.ids.ndim != 1:
            raise FghashError(f"item ids must be 1-d, got shape {list(self.ids.shape)}.")
        n = self.ids.shape[0]
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if self.labels.shape[0] != n:
                raise FghashError(f"expected labels for {n} items, got {self.labels.shape[0]}.")
        if self.paths is not None:
            self.paths = [str(p) for p in self.paths]
            if len(self.paths) != n:
                raise FghashError(f"expected paths for {n} items, got {len(self.paths)}.")

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @classmethod
    def from_split(cls, split: Split, source: dict[str, Any] | None = None) -> ItemMeta:
        """The ids, labels and paths of one split of a codes file."""
        return cls(ids=split.ids, labels=split.labels, paths=split.paths, source=source)

    def record(self, position: int) -> dict[str, Any]:
        """``{"id", "label", "path"}`` of one item, JSON-ready.

        ``label`` is an int for single-label data, the sorted list of set label indices
        for multi-hot labels, and None without labels; ``path`` is None without paths.
        """
        return {
            "id": int(self.ids[position]),
            "label": self._label(position),
            "path": self.paths[position] if self.paths is not None else None,
        }

    def _label(self, position: int) -> int | list[int] | None:
        if self.labels is None:
            return None
        lab = self.labels[position]
        if self.labels.ndim == 2:
            return [int(j) for j in np.flatnonzero(lab)]
        return int(lab)


def write_items(path: str | os.PathLike[str], items: ItemMeta) -> None:
    """Write ``items`` to an HDF5 file (``ids``, optional ``labels`` and ``paths``)."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["format"] = ITEMS_FORMAT
        f.attrs["version"] = 1
        f.create_dataset("ids", data=items.ids)
        if items.labels is not None:
            dt = np.uint8 if items.labels.ndim == 2 else np.int64
            f.create_dataset("labels", data=np.asarray(items.labels, dtype=dt))
        if items.paths is not None:
            f.create_dataset("paths", data=items.paths, dtype=h5py.string_dtype("utf-8"))


def read_items(path: str | os.PathLike[str], source: dict[str, Any] | None = None) -> ItemMeta:
    """Read an ``items.h5`` written by :func:`write_items`."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            fmt = f.attrs.get("format")
            fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
            if fmt != ITEMS_FORMAT or "ids" not in f:
                raise FghashError(f"{path} is not an fghash item file (format {fmt!r}).")
            ids = f["ids"][()]
            labels = f["labels"][()] if "labels" in f else None
            paths = None
            if "paths" in f:
                paths = [p.decode() if isinstance(p, bytes) else str(p) for p in f["paths"][()]]
    except OSError:
        raise FghashError(f"{path} is missing or not an HDF5 file.") from None
    return ItemMeta(ids=ids, labels=labels, paths=paths, source=source)


def result_rows(D: np.ndarray, I: np.ndarray, items: ItemMeta) -> list[list[dict[str, Any]]]:
    """Turn ``(D, I)`` from :meth:`BinaryIndex.search` into records per query.

    Each record is ``{"rank", "id", "distance", "label", "path"}``, rank from 1;
    slots with ``I = -1`` (nothing found) are left out.
    """
    out: list[list[dict[str, Any]]] = []
    for drow, irow in zip(D, I, strict=True):
        rows = []
        for rank, (d, i) in enumerate(zip(drow, irow, strict=True), start=1):
            if i < 0:
                continue
            rec = items.record(int(i))
            rows.append(
                {
                    "rank": rank,
                    "id": rec["id"],
                    "distance": int(d),
                    "label": rec["label"],
                    "path": rec["path"],
                }
            )
        out.append(rows)
    return out


def search_items(
    index: Any,
    items: ItemMeta,
    xq: np.ndarray,
    k: int,
    *,
    queries: ItemMeta | Sequence[dict[str, Any]] | None = None,
    **search_kw: Any,
) -> list[dict[str, Any]]:
    """Search ``index`` and describe the results by item: one dict per query.

    Returns ``[{"query": {"id", "label", "path"}, "results": [{"rank", "id",
    "distance", "label", "path"}, ...]}, ...]``; ``queries`` describes the query rows
    (an :class:`ItemMeta`, or None when the queries are bare codes: all fields None).
    ``search_kw`` (nprobe, ef_search, nflip) go to :meth:`BinaryIndex.search`.
    """
    if len(items) != index.ntotal:
        raise FghashError(
            f"item metadata lists {len(items)} items but the index holds {index.ntotal}."
        )
    D, I = index.search(xq, k, **search_kw)
    rows = result_rows(D, I, items)
    out = []
    for qi, res in enumerate(rows):
        if queries is None:
            q = {"id": None, "label": None, "path": None}
        elif isinstance(queries, ItemMeta):
            q = queries.record(qi)
        else:
            q = dict(queries[qi])
        out.append({"query": q, "results": res})
    return out
