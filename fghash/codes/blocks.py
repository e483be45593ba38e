"""Block streaming of codes files larger than memory: read a split in row blocks, write
a file block by block, append rows to a split.

Everything here keeps memory bounded by one block of rows (plus, when ids are not
increasing, one sorted copy of them) and checks what :func:`fghash.codes.file.read_codes`
checks, with the same per-split checks (:mod:`fghash.codes.checks`). Writes go to a
temporary file that is renamed onto the target only when complete.

**Unknown attributes.** ``attributes`` are 0/1; the value ``255`` (:data:`UNKNOWN_ATTRIBUTE`)
means "not known for this item". :func:`append_codes` writes it into every attribute of
new rows that carry no attributes (e.g. images encoded by ``fghash add --images``) when the
split has an ``attributes`` dataset, and logs one warning; ``fghash explain`` leaves such
rows out of the statistics of that attribute.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fghash.codes.bits import check_bits, nbytes_for
from fghash.codes.checks import (
    UNKNOWN_ATTRIBUTE,
    CodesFileError,
    check_codes,
    check_split,
    check_stored,
    check_unused_bits,
    fail,
    ids_unique,
)
from fghash.codes.file import (
    Split,
    check_target,
    decode_text,
    encode_texts,
    open_hdf5,
    read_attrs,
    read_header,
    row_chunks,
    write_header,
)
from fghash.codes.room import dataset_bytes, open_h5, strings_bytes
from fghash.errors import FghashError
from fghash.util.atomic import atomic_path

__all__ = [
    "SplitReader",
    "IdsChecker",
    "open_split",
    "CodesWriter",
    "append_codes",
    "remove_rows",
    "UNKNOWN_ATTRIBUTE",
]

logger = logging.getLogger(__name__)


class SplitReader:
    """One split of a codes file, open for reading in row blocks without loading it whole.

    Opening checks the header and every dataset's dtype and shape (cheap);
    :meth:`validate` checks the contents a full read would check (unused high bits 0,
    unique ids) block by block, in memory bounded by one block plus, only when the ids
    are not increasing, one sorted copy of them. Use as a context manager or call
    :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str], split: str = "database") -> None:
        self.path = Path(path)
        self.split = split
        where = str(self.path)
        self._f = open_hdf5(self.path)
        try:
            head = read_header(self._f, where)
            self.bits = check_bits(head["bits"])
            self.method: str = head["method"]
            self.config: dict[str, Any] = head["config"]
            names = [k for k, v in self._f.items() if hasattr(v, "keys")]
            if split not in names:
                raise CodesFileError(
                    f"{where} has no split {split!r}; it has {', '.join(sorted(names)) or 'none'}."
                )
            self._g = self._f[split]
            self.n = self._check_shapes(where)
        except BaseException:
            self._f.close()
            raise

    def _check_shapes(self, where: str) -> int:
        g, name = self._g, f"/{self.split}"
        for ds in ("codes", "ids"):
            if ds not in g:
                raise fail(where, f"{name}/{ds}", "missing")
        for ds in g.keys():
            check_stored(where, f"{name}/{ds}", g[ds])
        n = check_codes(where, name, g["codes"], self.bits, padding=False)
        check_split(
            where,
            name,
            n,
            ids=g["ids"],
            labels=g.get("labels"),
            paths=g.get("paths"),
            features=g.get("features"),
            attributes=g.get("attributes"),
            unique=False,
        )
        return n

    def __enter__(self) -> SplitReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the HDF5 file."""
        self._f.close()

    def __len__(self) -> int:
        return self.n

    def has(self, name: str) -> bool:
        """True when the split holds dataset ``name`` (``labels``, ``paths``, ...)."""
        return name in self._g

    def read(self, name: str, start: int = 0, stop: int | None = None) -> Any:
        """Rows ``start:stop`` of dataset ``name``; ``paths`` come back as a list of str.

        Numeric datasets stored without filters (as fghash writes them) are read
        straight from the file's bytes at their chunks' offsets, several times faster
        than through HDF5 and without holding h5py's global lock; anything else goes
        through h5py.
        """
        stop = self.n if stop is None else min(int(stop), self.n)
        ds = self._g[name]
        if name != "paths":
            rows = _raw_rows(self.path, ds, int(start), stop)
            if rows is not None:
                return rows
        rows = ds[start:stop]
        if name == "paths":
            return [decode_text(p) for p in rows]
        return rows

    def blocks(self, rows: int = 1 << 20) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` row ranges of at most ``rows`` rows covering the split."""
        for s in range(0, self.n, max(1, int(rows))):
            yield s, min(self.n, s + rows)

    def validate(self, rows: int = 1 << 20) -> None:
        """Check unused high bits and id uniqueness, one block of rows at a time."""
        self.check_padding(rows)
        checker = IdsChecker(self)
        for s, e in self.blocks(rows):
            checker.feed(self.read("ids", s, e))
        checker.finish()

    def check_padding(self, rows: int = 1 << 20) -> None:
        """Check that no code sets a bit above ``bits`` (reads the last byte only)."""
        if self.bits % 8 == 0:  # whole bytes: no bit beyond `bits` exists
            return
        for s, e in self.blocks(rows):
            check_unused_bits(
                str(self.path), f"/{self.split}", self._g["codes"][s:e, -1:], self.bits
            )


def _raw_rows(path: Path, ds: Any, start: int, stop: int) -> np.ndarray | None:
    """Rows ``start:stop`` of an unfiltered numeric dataset read with ``os.preadv`` at
    the byte offsets HDF5 reports, or None when the layout does not allow it."""
    try:
        if ds.dtype.kind not in "iuf" or ds.ndim == 0 or stop <= start:
            return None
        if ds.id.get_create_plist().get_nfilters():
            return None
        rest = ds.shape[1:]
        out = np.empty((stop - start, *rest), dtype=ds.dtype)
        row_bytes = out.itemsize * int(np.prod(rest, dtype=np.int64))
        if ds.chunks is None:
            offset = ds.id.get_offset()
            if offset is None:
                return None
            pieces = [(start, stop, offset + start * row_bytes)]
        else:
            if tuple(ds.chunks[1:]) != tuple(rest):
                return None  # chunks that cut rows: leave it to HDF5
            step = ds.chunks[0]
            pieces = []
            for c0 in range(start - start % step, stop, step):
                info = ds.id.get_chunk_info_by_coord((c0,) + (0,) * len(rest))
                if info.byte_offset is None or info.filter_mask:
                    return None  # a chunk never written (fill value) or filtered
                a, b = max(start, c0), min(stop, c0 + step)
                pieces.append((a, b, info.byte_offset + (a - c0) * row_bytes))
        flat = out.reshape(stop - start, -1).view(np.uint8)
        fd = os.open(path, os.O_RDONLY)
        try:
            for a, b, offset in pieces:
                view = memoryview(flat[a - start : b - start]).cast("B")
                if os.preadv(fd, [view], offset) != (b - a) * row_bytes:
                    return None
        finally:
            os.close(fd)
        return out
    except (AttributeError, OSError, RuntimeError, ValueError, TypeError):
        return None


class IdsChecker:
    """Check a split's ids unique while they stream past in order, block by block.

    :meth:`feed` each block of ids in row order, then :meth:`finish`. Increasing ids
    (``0..N-1`` and the like) are settled on the way in linear time; otherwise
    :meth:`finish` reads them once more and sorts (see :func:`ids_unique`).
    """

    def __init__(self, reader: SplitReader) -> None:
        self.reader = reader
        self.increasing = True
        self._last: Any = None

    def feed(self, ids: np.ndarray) -> None:
        if not self.increasing or ids.shape[0] == 0:
            return
        if (self._last is not None and ids[0] <= self._last) or not np.all(ids[1:] > ids[:-1]):
            self.increasing = False
        else:
            self._last = ids[-1]

    def finish(self) -> None:
        r = self.reader
        if not self.increasing and not ids_unique(r.read("ids")):
            raise fail(str(r.path), f"/{r.split}/ids", "ids must be unique within the split")


def open_split(path: str | os.PathLike[str], split: str = "database") -> SplitReader:
    """Open one split of a codes file for block-wise reading (see :class:`SplitReader`)."""
    return SplitReader(path, split)


class CodesWriter:
    """Write a codes file block by block, in memory bounded by one block.

    Declare every split's datasets up front (:meth:`add_split`), fill them with
    :meth:`write` in any order of blocks, then :meth:`commit` renames the finished file
    onto ``path``; :meth:`abort` (or leaving the ``with`` block by an exception) removes
    it, so ``path`` never holds a partial file. Ids are checked unique on commit.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        bits: int,
        *,
        method: str = "unknown",
        config: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.bits = check_bits(bits)
        check_target(self.path, overwrite)
        self._atomic = atomic_path(self.path)
        self.tmp = self._atomic.__enter__()
        try:
            header = 2 * len(json.dumps(dict(config or {}), default=str))
            self._f, self._room = open_h5(self.tmp, "w", header)
        except BaseException as e:
            self._atomic.__exit__(type(e), e, e.__traceback__)
            raise
        write_header(self._f, self.bits, method, config)

    def add_split(
        self,
        name: str,
        n: int,
        *,
        labels: Any = None,
        paths: bool = False,
        features: tuple[int, str] | None = None,
        attributes: int | None = None,
    ) -> None:
        """Declare split ``name`` of ``n`` rows: ``labels`` None, ``"single"`` or
        ``("multi", C)``; ``features`` ``(D, kind)``; ``attributes`` the column count."""
        import h5py

        g = self._f.create_group(name)
        room = [n * 16 + 4096 if paths else 0]

        def make(ds: str, shape: tuple[int, ...], dtype: Any) -> Any:
            chunks = row_chunks(shape, np.dtype(dtype).itemsize)
            room[0] += dataset_bytes(shape, np.dtype(dtype).itemsize, chunks)
            return g.create_dataset(ds, shape=shape, dtype=dtype, chunks=chunks)

        make("codes", (n, nbytes_for(self.bits)), np.uint8)
        make("ids", (n,), np.int64)
        if labels == "single":
            make("labels", (n,), np.int64)
        elif labels is not None:
            make("labels", (n, int(labels[1])), np.uint8)
        if paths:
            g.create_dataset("paths", shape=(n,), dtype=h5py.string_dtype("utf-8"))
        if features is not None:
            make("features", (n, int(features[0])), np.float32).attrs["kind"] = features[1]
        if attributes is not None:
            make("attributes", (n, int(attributes)), np.uint8)
        self._room.take(room[0])  # before HDF5 allocates any of it (at flush or close)

    def write(self, name: str, start: int, **data: Any) -> None:
        """Rows ``start:start+len`` of split ``name``: ``codes=``, ``ids=``, ``labels=``..."""
        g = self._f[name]
        for ds, value in data.items():
            if value is None:
                continue
            if ds == "codes":
                check_unused_bits(str(self.path), f"/{name}", np.asarray(value), self.bits)
            if ds == "paths":
                value = encode_texts(value)
                self._room.take(strings_bytes(value))
            g[ds][start : start + len(value)] = value

    def set_attribute_names(self, names: Sequence[str]) -> None:
        """Write the names of the ``attributes`` columns."""
        import h5py

        self._room.take(strings_bytes(names))
        self._f.create_dataset(
            "attribute_names", data=list(names), dtype=h5py.string_dtype("utf-8")
        )

    def commit(self) -> Path:
        """Check ids, close the file and rename it onto ``path``."""
        for name, g in self._f.items():
            if hasattr(g, "keys") and not ids_unique(g["ids"][()]):
                raise fail(str(self.path), f"/{name}/ids", "ids must be unique within the split")
        self._f.close()
        self._room.release()
        self._atomic.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        """Close and remove the temporary file; ``path`` stays as it was."""
        self._f.close()
        self._atomic.__exit__(FghashError, FghashError("aborted"), None)

    def __enter__(self) -> CodesWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None and self._f.id.valid:
            self.abort()


def append_codes(
    path: str | os.PathLike[str],
    split: str,
    new: Split,
    *,
    block: int = 1 << 20,
    out: str | os.PathLike[str] | None = None,
) -> Path:
    """Append the rows of ``new`` to split ``split`` of the codes file at ``path``.

    The file is rewritten block by block into a temporary file and renamed over
    ``path`` (or onto ``out``, leaving ``path`` as it is: a caller that must switch
    several files together renames it itself), so a failure leaves it as it was. ``new`` must carry the datasets the
    split has (labels of the same form, paths, features of the same width, attributes)
    and ids not already in the split. Other splits are copied unchanged. New rows without
    attributes, appended to a split that has them, get :data:`UNKNOWN_ATTRIBUTE` in every
    column (one warning says so).
    """
    path = Path(path)
    with open_split(path, split) as r:
        new = _unknown_attributes(r, new)
        _check_appendable(r, new)
    with _rewriting(path, out) as (src, w):
        for name, g in _split_groups(src):
            n_old = int(g["codes"].shape[0])
            extra = len(new) if name == split else 0
            w.add_split(name, n_old + extra, **_layout(g))
            _copy_rows(g, w, name, n_old, block)
            if extra:
                w.write(
                    name,
                    n_old,
                    codes=new.codes,
                    ids=new.ids,
                    labels=new.labels,
                    paths=new.paths,
                    features=new.features,
                    attributes=new.attributes,
                )
        return w.commit()


def remove_rows(
    path: str | os.PathLike[str],
    split: str,
    keep: np.ndarray,
    *,
    block: int = 1 << 20,
    out: str | os.PathLike[str] | None = None,
) -> Path:
    """Drop the rows of split ``split`` where the boolean ``keep`` is False.

    Rewritten block by block, like :func:`append_codes`, into a temporary file renamed
    over ``path`` (or onto ``out``); other splits are copied unchanged and the kept rows
    keep their order.
    """
    path = Path(path)
    keep = np.asarray(keep, dtype=bool)
    with _rewriting(path, out) as (src, w):
        for name, g in _split_groups(src):
            n_old = int(g["codes"].shape[0])
            if name != split:
                w.add_split(name, n_old, **_layout(g))
                _copy_rows(g, w, name, n_old, block)
                continue
            if keep.shape != (n_old,):
                raise CodesFileError(f"{path}: /{name} has {n_old} rows, not {keep.shape[0]}.")
            w.add_split(name, int(keep.sum()), **_layout(g))
            at = 0
            for s0 in range(0, n_old, block):
                kept = np.flatnonzero(keep[s0 : s0 + block])
                if kept.size == 0:
                    continue
                rows = {ds: _rows(g[ds], s0, min(n_old, s0 + block)) for ds in g.keys()}
                w.write(name, at, **{ds: _take(v, kept) for ds, v in rows.items()})
                at += kept.size
        return w.commit()


@contextmanager
def _rewriting(path: Path, out: str | os.PathLike[str] | None) -> Iterator[tuple[Any, CodesWriter]]:
    """The codes file at ``path`` open for reading, and a :class:`CodesWriter` of the same
    header (bits, method, config, attribute names) for ``out`` (default: ``path``)."""
    head = read_attrs(path)
    with (
        open_hdf5(path) as src,
        CodesWriter(
            path if out is None else out,
            head["bits"],
            method=head["method"],
            config=head["config"],
            overwrite=True,
        ) as w,
    ):
        if "attribute_names" in src:
            w.set_attribute_names([decode_text(a) for a in src["attribute_names"][()]])
        yield src, w


def _split_groups(src: Any) -> Iterator[tuple[str, Any]]:
    return ((name, g) for name, g in src.items() if hasattr(g, "keys"))


def _take(rows: Any, kept: np.ndarray) -> Any:
    return [rows[i] for i in kept] if isinstance(rows, list) else np.asarray(rows)[kept]


def _unknown_attributes(r: SplitReader, new: Split) -> Split:
    """``new`` with :data:`UNKNOWN_ATTRIBUTE` attributes when the split has attributes and
    ``new`` has none; ``new`` unchanged otherwise."""
    if not r.has("attributes") or new.attributes is not None or len(new) == 0:
        return new
    a = int(r.read("attributes", 0, 0).shape[1])
    logger.warning(
        "%s: /%s has attributes but the %d new items have none; their attributes are "
        "stored as unknown (%d) and left out of attribute statistics",
        r.path,
        r.split,
        len(new),
        UNKNOWN_ATTRIBUTE,
    )
    unknown = np.full((len(new), a), UNKNOWN_ATTRIBUTE, dtype=np.uint8)
    return dataclasses.replace(new, attributes=unknown)


def _check_appendable(r: SplitReader, new: Split) -> None:
    """Refuse ``new`` unless it has the split's code width, datasets, per-item shapes,
    and ids that are not in the split yet."""
    where = f"{r.path}: /{r.split}"
    nb = nbytes_for(r.bits)
    if new.codes.dtype != np.uint8 or new.codes.ndim != 2 or new.codes.shape[1] != nb:
        raise CodesFileError(
            f"{where} holds {r.bits}-bit codes ({nb} bytes) but the new codes are "
            f"{new.codes.dtype} {list(new.codes.shape)}."
        )
    for ds in ("labels", "paths", "features", "attributes"):
        if r.has(ds) != (getattr(new, ds) is not None):
            side = "has" if r.has(ds) else "has no"
            raise CodesFileError(
                f"{where} {side} {ds} but the new items {'do not' if r.has(ds) else 'do'}; "
                f"both must carry the same datasets."
            )
    for ds in ("labels", "features", "attributes"):
        value = getattr(new, ds)
        if value is not None and r.read(ds, 0, 0).shape[1:] != np.shape(value)[1:]:
            raise CodesFileError(
                f"{where}: {ds} have shape {list(r.read(ds, 0, 0).shape[1:])} per item but "
                f"the new items' have {list(np.shape(value)[1:])}."
            )
    old_ids = r.read("ids")
    if not ids_unique(np.concatenate([old_ids, np.asarray(new.ids, dtype=np.int64)])):
        dup = np.intersect1d(old_ids, new.ids)
        what = f"id {int(dup[0])} is already in the split" if dup.size else "ids repeat"
        raise CodesFileError(f"{where}: cannot append: {what}; ids must stay unique.")


def _layout(g: Any) -> dict[str, Any]:
    """The :meth:`CodesWriter.add_split` arguments that recreate the datasets of group ``g``."""
    lab = g["labels"] if "labels" in g else None
    feats = g["features"] if "features" in g else None
    return {
        "labels": None if lab is None else ("single" if lab.ndim == 1 else ("multi", lab.shape[1])),
        "paths": "paths" in g,
        "features": None
        if feats is None
        else (feats.shape[1], str(feats.attrs.get("kind", "unknown"))),
        "attributes": g["attributes"].shape[1] if "attributes" in g else None,
    }


def _copy_rows(g: Any, w: CodesWriter, name: str, n: int, block: int) -> None:
    """Copy the first ``n`` rows of every dataset of group ``g`` into split ``name`` of ``w``."""
    for s0 in range(0, n, block):
        e0 = min(n, s0 + block)
        w.write(name, s0, **{ds: _rows(g[ds], s0, e0) for ds in g.keys()})


def _rows(ds: Any, start: int, stop: int) -> Any:
    rows = ds[start:stop]
    if ds.dtype.kind == "O":
        return [decode_text(p) for p in rows]
    return rows
