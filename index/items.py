"""Item metadata beside an index: positions 0..N-1 → ids, labels and paths.

FAISS returns database *positions*; the codes file's ``ids`` (unique int64, not
necessarily 0..N-1), ``labels`` and ``paths`` travel with the index in ``items.h5``
and turn result rows into readable records.

``items.h5`` stores ``ids`` and ``labels`` as contiguous, uncompressed datasets, so
:func:`read_items` memory-maps them: opening a bundle of ten million items reads none
of its 160 MB of metadata, and a search touches only the pages of the rows it returns.
Paths (variable-length strings) are read on demand, only for the rows asked for.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fghash.codes import SplitReader, ids_unique
from fghash.errors import FghashError

__all__ = [
    "ItemMeta",
    "LazyStrings",
    "ItemsWriter",
    "labels_form",
    "split_labels_form",
    "write_items",
    "read_items",
    "result_rows",
    "search_items",
]

ITEMS_FORMAT = "fghash.items"
# Beyond this share of the rows, reading a whole string dataset beats selecting points.
_WHOLE_READ_SHARE = 0.02


def _decode(v: Any) -> str:
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v)


class LazyStrings(Sequence[str]):
    """A string dataset of an HDF5 file, read only for the rows asked for.

    Each access opens the file by name; :meth:`take` reads many rows in one go. The file
    met at construction is also kept open, so that when a writer has since replaced the
    name (a bundle switched by ``fghash add``) the rows still come from the version the
    rest of the bundle was read from. Compares equal to a list of the same strings.
    """

    def __init__(self, path: str | os.PathLike[str], name: str, n: int) -> None:
        self.path, self.name, self.n = Path(path), name, int(n)
        self._pinned = open(self.path, "rb")  # noqa: SIM115 - kept for the object's life
        st = os.fstat(self._pinned.fileno())
        self._key = (st.st_ino, st.st_dev)

    def __del__(self) -> None:
        pinned = getattr(self, "_pinned", None)
        if pinned is not None:
            pinned.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name, "n": self.n}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["name"], state["n"])  # type: ignore[misc]

    def _open(self) -> Any:
        """The HDF5 file, by name while the name still holds the pinned version."""
        import h5py

        try:
            st = os.stat(self.path)
            same = (st.st_ino, st.st_dev) == self._key
        except OSError:
            same = False
        return h5py.File(self.path if same else self._pinned, "r")

    def __len__(self) -> int:
        return self.n

    def take(self, positions: Sequence[int] | np.ndarray) -> list[str]:
        """The strings at ``positions`` (any order, repeats allowed)."""

        pos = np.asarray(positions, dtype=np.int64).ravel()
        if pos.size == 0:
            return []
        if pos.min() < 0 or pos.max() >= self.n:
            raise IndexError(f"row out of range 0..{self.n - 1}")
        uniq, inv = np.unique(pos, return_inverse=True)
        with self._open() as f:
            ds = f[self.name]
            if uniq[-1] - uniq[0] + 1 == uniq.size:  # a contiguous run: one slice
                got = ds[int(uniq[0]) : int(uniq[-1]) + 1]
            elif uniq.size > _WHOLE_READ_SHARE * self.n:
                got = ds[()][uniq]
            else:
                got = ds[uniq]
        vals = [_decode(v) for v in got]
        return [vals[j] for j in inv]

    def __getitem__(self, i: Any) -> Any:  # type: ignore[override]
        if isinstance(i, slice):
            return self.take(np.arange(self.n)[i])
        i = int(i)
        return self.take([i + self.n if i < 0 else i])[0]

    def __iter__(self) -> Iterator[str]:
        block = 1 << 16
        for s in range(0, self.n, block):
            yield from self.take(np.arange(s, min(self.n, s + block)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, LazyStrings)):
            return len(other) == self.n and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LazyStrings({str(self.path)!r}, {self.name!r}, n={self.n})"


@dataclass
class ItemMeta:
    """Metadata of the N indexed items, in database order."""

    ids: np.ndarray  # int64 [N] (possibly a read-only memory map)
    labels: np.ndarray | None = None  # int64 [N], or uint8 [N, C] multi-hot
    paths: Sequence[str] | None = None  # list, or LazyStrings read on demand
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
            if not isinstance(self.paths, LazyStrings):
                self.paths = [str(p) for p in self.paths]
            if len(self.paths) != n:
                raise FghashError(f"expected paths for {n} items, got {len(self.paths)}.")

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def labels_form(self) -> Any:
        """:func:`labels_form` of the items' labels (what ``fghash add`` must match)."""
        return labels_form(self.labels)

    def has_paths(self) -> bool:
        """True when the items carry paths."""
        return self.paths is not None

    def present_id(self, ids: np.ndarray) -> int | None:
        """One of the unique ``ids`` that the items already hold, or None."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids_unique(np.concatenate([self.ids, ids])):
            return None
        return int(np.intersect1d(self.ids, ids)[0])

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

    def records(self, positions: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        """:meth:`record` of many positions, reading lazily stored paths in one go."""
        pos = np.asarray(positions, dtype=np.int64).ravel()
        ids = self.ids[pos]
        labels = None if self.labels is None else self.labels[pos]
        if self.paths is None:
            paths: list[str | None] = [None] * pos.size
        elif isinstance(self.paths, LazyStrings):
            paths = list(self.paths.take(pos))
        else:
            paths = [self.paths[int(p)] for p in pos]
        out = []
        for j in range(pos.size):
            if labels is None:
                lab: int | list[int] | None = None
            elif labels.ndim == 2:
                lab = [int(c) for c in np.flatnonzero(labels[j])]
            else:
                lab = int(labels[j])
            out.append({"id": int(ids[j]), "label": lab, "path": paths[j]})
        return out

    def _label(self, position: int) -> int | list[int] | None:
        if self.labels is None:
            return None
        lab = self.labels[position]
        if self.labels.ndim == 2:
            return [int(j) for j in np.flatnonzero(lab)]
        return int(lab)


class _RawColumn:
    """A contiguous numeric dataset allocated when created and filled with ``pwritev``
    at its byte offset: no HDF5 fill pass, no copy through HDF5's buffers."""

    def __init__(self, f: Any, path: Path, name: str, shape: tuple[int, ...], dtype: Any):
        import h5py

        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        self.dtype = np.dtype(dtype)
        space = h5py.h5s.create_simple(shape)
        tid = h5py.h5t.py_create(self.dtype)
        self.ds = h5py.Dataset(h5py.h5d.create(f.id, name.encode(), tid, space, dcpl=dcpl))
        self.row_bytes = self.dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        self.offset = self.ds.id.get_offset() if shape[0] else None
        self.fd = os.open(path, os.O_WRONLY) if self.offset is not None else None

    def write(self, start: int, rows: np.ndarray) -> None:
        data = np.ascontiguousarray(rows, dtype=self.dtype)
        if self.fd is None:
            self.ds[start : start + len(data)] = data
            return
        view = memoryview(data.reshape(len(data), -1).view(np.uint8)).cast("B")
        done = os.pwritev(self.fd, [view], self.offset + start * self.row_bytes)
        if done != len(view):
            # a short write to a regular file: the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.ds.file.filename)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class ItemsWriter:
    """Write an ``items.h5`` of ``n`` rows block by block (bounded memory).

    ``labels`` is None, ``"single"`` (int64 ``[n]``) or ``("multi", C)`` (uint8
    ``[n, C]``); ``paths`` says whether a string dataset is written. ``ids`` and
    ``labels`` are contiguous and uncompressed so that :func:`read_items` can
    memory-map them; they are allocated up front and written at their offsets.
    """

    def __init__(
        self, path: str | os.PathLike[str], n: int, *, labels: Any = None, paths: bool = False
    ) -> None:
        import h5py

        from fghash.codes.room import dataset_bytes, open_h5

        path = Path(path)
        room = dataset_bytes((n,), 8) + (n * 16 + 4096 if paths else 0)
        if labels is not None:
            room += dataset_bytes((n,), 8) if labels == "single" else n * int(labels[1]) + 4096
        # room on disk set aside first: a full disk fails here, not in HDF5's close
        self._f, self._room = open_h5(path, "w", room)
        self._cols: list[_RawColumn] = []
        try:
            self._f.attrs["format"] = ITEMS_FORMAT
            self._f.attrs["version"] = 1
            self._ids = self._column(path, "ids", (n,), np.int64)
            self._labels = None
            if labels == "single":
                self._labels = self._column(path, "labels", (n,), np.int64)
            elif labels is not None:
                self._labels = self._column(path, "labels", (n, int(labels[1])), np.uint8)
            self._paths = None
            if paths:
                dt = h5py.string_dtype("utf-8")
                self._paths = self._f.create_dataset("paths", shape=(n,), dtype=dt)
            self._f.flush()
        except BaseException:
            self.close()
            raise

    def _column(self, path: Path, name: str, shape: tuple[int, ...], dtype: Any) -> _RawColumn:
        col = _RawColumn(self._f, path, name, shape, dtype)
        self._cols.append(col)
        return col

    def write(
        self,
        start: int,
        ids: np.ndarray,
        labels: np.ndarray | None = None,
        paths: Sequence[str] | None = None,
    ) -> None:
        """Rows ``start : start + len(ids)``."""
        stop = start + len(ids)
        if stop > start:
            self._ids.write(start, ids)
            if self._labels is not None:
                self._labels.write(start, labels)  # type: ignore[arg-type]
            if self._paths is not None:
                from fghash.codes.file import encode_texts
                from fghash.codes.room import strings_bytes

                texts = encode_texts(paths)  # type: ignore[arg-type]
                self._room.take(strings_bytes(texts))
                self._paths[start:stop] = texts

    def close(self) -> None:
        for col in self._cols:
            col.close()
        self._f.close()
        self._room.release()

    def __enter__(self) -> ItemsWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def labels_form(labels: np.ndarray | None) -> Any:
    """The ``labels`` argument of :class:`ItemsWriter` for a labels array (or None)."""
    if labels is None:
        return None
    return ("multi", labels.shape[1]) if labels.ndim == 2 else "single"


def split_labels_form(r: SplitReader) -> Any:
    """:func:`labels_form` of a split being read block by block (reads one row)."""
    return labels_form(r.read("labels", 0, 1) if r.has("labels") else None)


def write_items(path: str | os.PathLike[str], items: ItemMeta, block: int = 1 << 20) -> None:
    """Write ``items`` to an HDF5 file (``ids``, optional ``labels`` and ``paths``)."""
    n = len(items)
    with ItemsWriter(path, n, labels=labels_form(items.labels), paths=items.paths is not None) as w:
        for s in range(0, n, block):
            e = min(n, s + block)
            w.write(
                s,
                items.ids[s:e],
                None if items.labels is None else items.labels[s:e],
                None if items.paths is None else items.paths[s:e],
            )


def _mapped(path: Path, ds: Any) -> np.ndarray:
    """A read-only memory map of a contiguous, uncompressed dataset (else a full read)."""
    offset = ds.id.get_offset() if ds.chunks is None and ds.compression is None else None
    if offset is None or ds.size == 0:
        return ds[()]
    return np.memmap(path, dtype=ds.dtype, mode="r", offset=offset, shape=ds.shape)


def read_items(
    path: str | os.PathLike[str], source: dict[str, Any] | None = None, *, lazy: bool = True
) -> ItemMeta:
    """Read an ``items.h5`` written by :func:`write_items`.

    ``lazy=True`` memory-maps ids and labels and reads paths on demand (see the module
    docstring); ``lazy=False`` reads everything into memory.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            fmt = f.attrs.get("format")
            fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
            if fmt != ITEMS_FORMAT or "ids" not in f:
                raise FghashError(f"{path} is not an fghash item file (format {fmt!r}).")
            n = int(f["ids"].shape[0])
            if lazy:
                ids = _mapped(path, f["ids"])
                labels = _mapped(path, f["labels"]) if "labels" in f else None
                paths: Any = LazyStrings(path, "paths", n) if "paths" in f else None
            else:
                ids = f["ids"][()]
                labels = f["labels"][()] if "labels" in f else None
                paths = [_decode(p) for p in f["paths"][()]] if "paths" in f else None
    except OSError:
        raise FghashError(f"{path} is missing or not an HDF5 file.") from None
    return ItemMeta(ids=ids, labels=labels, paths=paths, source=source)


def result_rows(D: np.ndarray, I: np.ndarray, items: ItemMeta) -> list[list[dict[str, Any]]]:
    """Turn ``(D, I)`` from :meth:`BinaryIndex.search` into records per query.

    Each record is ``{"rank", "id", "distance", "label", "path"}``, rank from 1;
    slots with ``I = -1`` (nothing found) are left out.
    """
    I = np.asarray(I)
    found = I >= 0
    recs = iter(items.records(I[found]))
    out: list[list[dict[str, Any]]] = []
    for drow, irow in zip(D, I, strict=True):
        rows = []
        for rank, (d, i) in enumerate(zip(drow, irow, strict=True), start=1):
            if i < 0:
                continue
            rec = next(recs)
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
    radius: int | None = None,
    max_results: int | None = None,
    **search_kw: Any,
) -> list[dict[str, Any]]:
    """Search ``index`` and describe the results by item: one dict per query.

    Returns ``[{"query": {"id", "label", "path"}, "results": [{"rank", "id",
    "distance", "label", "path"}, ...]}, ...]``; ``queries`` describes the query rows
    (an :class:`ItemMeta`, or None when the queries are bare codes: all fields None).
    ``search_kw`` (nprobe, ef_search, nflip) go to :meth:`BinaryIndex.search`.

    With ``radius`` the search is by Hamming radius (:mod:`index.radius`: every item at
    distance ``<= radius``, at most ``max_results`` per query; ``k`` is not used) and each
    query's dict gets ``"truncated"``: True when more items lay within the radius.
    """
    if len(items) != index.ntotal:
        raise FghashError(
            f"item metadata lists {len(items)} items but the index holds {index.ntotal}."
        )
    if radius is not None:
        from index.radius import range_rows

        ranges = index.range_search(xq, radius, max_results=max_results, **search_kw)
        found = range_rows(ranges, items)
        rows = [res for res, _ in found]
    else:
        if max_results is not None:
            raise FghashError("max_results goes with a radius search (--radius).")
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
        if radius is not None:
            out[-1]["truncated"] = found[qi][1]
    return out
