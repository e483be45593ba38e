"""The per-split checks of the split-group layout (``shared/DESIGN.md``), in one place.

A codes file and a features file hold one HDF5 group per split whose datasets all have
one row per item: ``codes`` uint8 ``[N, ceil(bits/8)]``, ``ids`` int64 ``[N]`` (unique),
``labels`` int64 ``[N]`` or multi-hot uint8 ``[N, C]``, ``paths`` ``[N]``, ``features``
float ``[N, D]`` and ``attributes`` uint8 ``[N, A]`` (0/1, or 255 =
:data:`UNKNOWN_ATTRIBUTE` where an item's attribute is not known). The checks here look at
dtype and shape (and, for in-memory attributes only, their values), so they take numpy
arrays and h5py datasets alike: the in-memory validator
(:meth:`fghash.codes.file.CodesFile.validate`), the block reader
(:class:`fghash.codes.blocks.SplitReader`) and the features file
(:mod:`fghash.codes.features`) all call them. Every failure is one
:class:`CodesFileError` naming the file, the dataset and the problem.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fghash.codes.bits import check_padding_zero, nbytes_for
from fghash.errors import FghashError

__all__ = [
    "CodesFileError",
    "fail",
    "ids_unique",
    "check_codes",
    "check_unused_bits",
    "check_split",
    "check_finite",
    "check_stored",
    "check_memory",
    "check_loadable",
    "available_memory",
    "UNKNOWN_ATTRIBUTE",
]

UNKNOWN_ATTRIBUTE = 255  # value of an ``attributes`` entry that is not known for the item

# A dataset may declare at most this many times the bytes the file stores for it: HDF5
# allocates lazily, so a file of a few KiB can declare 10**12 rows never written, which
# a reader would otherwise take for real (hours of reading, or a MemoryError). Deflate
# compresses at most about 1000:1; datasets under _SMALL bytes are not worth checking.
_MAX_RATIO = 4096
_SMALL = 1 << 20


class CodesFileError(FghashError):
    """A codes file (or a features file, which shares its split layout) is missing,
    unreadable, or does not follow schema version 1."""


def fail(path: str, dataset: str, problem: str) -> CodesFileError:
    """The error for ``problem`` in ``dataset`` of the file at ``path``."""
    return CodesFileError(f"{path}: {dataset}: {problem}.")


def check_finite(where: str, dataset: str, a: np.ndarray) -> None:
    """Refuse float values that are NaN or infinite (features, relaxed codes): every
    consumer (ranking, AUCs, baselines) would turn them into silent nonsense."""
    ok = np.isfinite(a)
    if not ok.all():
        bad = int(ok.size - np.count_nonzero(ok))
        raise fail(where, dataset, f"contains NaN or infinite values ({bad} of {ok.size})")


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""  # unreachable


def check_stored(where: str, dataset: str, ds: Any) -> None:
    """Refuse an HDF5 dataset ``ds`` that declares far more bytes than the file stores
    for it (rows declared but never written); arrays in memory pass."""
    dsid = getattr(ds, "id", None)
    if dsid is None or not hasattr(dsid, "get_storage_size"):
        return
    declared = int(np.prod(ds.shape, dtype=np.float64)) * int(dsid.get_type().get_size())
    if declared <= _SMALL:
        return
    stored = int(dsid.get_storage_size())
    if stored * _MAX_RATIO < declared:
        rows = int(ds.shape[0]) if ds.shape else 0
        raise fail(
            where,
            dataset,
            f"declares {rows:,} rows ({_size(declared)}) but the file stores only "
            f"{_size(stored)} of them; it is damaged or was never written to the end",
        )


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (MemAvailable plus free swap, from
    ``/proc/meminfo``), or None where that cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            info = {k: v for k, _, v in (line.partition(":") for line in fh)}
        return (int(info["MemAvailable"].split()[0]) + int(info["SwapFree"].split()[0])) << 10
    except (OSError, KeyError, ValueError, IndexError):
        return None


def check_memory(where: str, what: str, need: int) -> None:
    """Refuse to load ``what`` when it takes more memory (``need`` bytes) than is left."""
    avail = available_memory()
    if avail is not None and need > avail:
        raise CodesFileError(
            f"{where}: loading {what} takes about {_size(need)} of memory, more than the "
            f"{_size(avail)} available; use a machine with more memory or a smaller file."
        )


def check_loadable(where: str, group: str, g: Any, skip: Any = ()) -> None:
    """Refuse the HDF5 split group ``g`` (named ``group``) before loading it whole when a
    dataset declares rows the file does not store, or loading the datasets not in
    ``skip`` takes more memory than is left."""
    need = 0
    for ds in g.keys():
        d = g[ds]
        if not hasattr(d, "shape"):
            continue
        check_stored(where, f"{group}/{ds}", d)
        if ds not in skip:
            per_row = 100 if d.dtype.kind == "O" else d.dtype.itemsize  # a str and its text
            need += int(np.prod(d.shape, dtype=np.float64)) * per_row
    check_memory(where, group, need)


def ids_unique(ids: np.ndarray, block: int = 1 << 20) -> bool:
    """True when no value of the 1-d integer array ``ids`` repeats.

    Ids that strictly increase (``ids[i] < ids[i+1]`` for all i, as ``0..N-1`` does) are
    recognised block by block in linear time without a copy; otherwise one sort,
    ``O(N log N)`` time and one copy, and a comparison of neighbours in sorted order.
    (``numpy.unique`` does the same sort but costs far more at ten million ids.)
    """
    a = np.asarray(ids).ravel()
    n = a.shape[0]
    increasing = True
    for s in range(0, max(n - 1, 0), block):
        e = min(n - 1, s + block)
        if not np.all(a[s + 1 : e + 1] > a[s:e]):
            increasing = False
            break
    if increasing:
        return True
    srt = np.sort(a)
    for s in range(0, n - 1, block):
        e = min(n - 1, s + block)
        if np.any(srt[s + 1 : e + 1] == srt[s:e]):
            return False
    return True


def _desc(a: Any) -> str:
    return f"{a.dtype} {list(a.shape)}"


def _rows(a: Any) -> int:
    shape = getattr(a, "shape", None)
    if shape is None:
        return len(a)
    return int(shape[0]) if len(shape) else -1


def check_codes(where: str, group: str, codes: Any, bits: int, *, padding: bool = True) -> int:
    """Check ``group/codes`` is uint8 ``[N, ceil(bits/8)]`` (and, with ``padding``, that
    its unused high bits are 0); return N."""
    nb = nbytes_for(bits)
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != nb:
        raise fail(
            where,
            f"{group}/codes",
            f"expected uint8 [N, {nb}] for {bits} bits, got {_desc(codes)}",
        )
    if padding:
        check_unused_bits(where, group, codes, bits)
    return int(codes.shape[0])


def check_unused_bits(where: str, group: str, codes: Any, bits: int) -> None:
    """Check that no row of ``codes`` sets a bit above ``bits``; only the last byte is
    read, so ``codes[:, -1:]`` is enough."""
    try:
        check_padding_zero(codes, bits, "codes")
    except FghashError as e:
        raise fail(where, f"{group}/codes", str(e).rstrip(".")) from None


def _check_ids(where: str, group: str, ids: Any, n: int, unique: bool) -> None:
    if ids.ndim != 1 or ids.shape[0] != n or not np.issubdtype(ids.dtype, np.integer):
        raise fail(where, f"{group}/ids", f"expected int64 [{n}], got {_desc(ids)}")
    if unique and n and not ids_unique(np.asarray(ids)):
        raise fail(where, f"{group}/ids", "ids must be unique within the split")


def _check_labels(where: str, group: str, lab: Any, n: int) -> None:
    integer = np.issubdtype(lab.dtype, np.integer)
    ok = (lab.ndim == 1 and integer) or (lab.ndim == 2 and (integer or lab.dtype == np.bool_))
    if not ok or lab.shape[0] != n:
        raise fail(
            where,
            f"{group}/labels",
            f"expected int64 [{n}] or uint8 [{n}, C], got {_desc(lab)}",
        )


def _check_matrix(where: str, group: str, name: str, a: Any, n: int, want: str) -> None:
    floating = np.issubdtype(a.dtype, np.floating)
    if a.ndim != 2 or a.shape[0] != n or (want.startswith("float") and not floating):
        raise fail(where, f"{group}/{name}", f"expected {want.format(n=n)}, got {_desc(a)}")


def check_split(
    where: str,
    group: str,
    n: int,
    *,
    ids: Any,
    labels: Any = None,
    paths: Any = None,
    features: Any = None,
    attributes: Any = None,
    unique: bool = True,
) -> None:
    """Check the datasets of one split of ``n`` rows; ``None`` means the split has none.

    ``unique=False`` skips the id uniqueness test (a block reader does it while
    streaming; see :class:`fghash.codes.blocks.IdsChecker`).
    """
    _check_ids(where, group, ids, n, unique)
    if labels is not None:
        _check_labels(where, group, labels, n)
    if paths is not None and _rows(paths) != n:
        raise fail(where, f"{group}/paths", f"expected {n} paths, got {_rows(paths)}")
    if features is not None:
        _check_matrix(where, group, "features", features, n, "float32 [{n}, D]")
    if attributes is not None:
        _check_matrix(where, group, "attributes", attributes, n, "uint8 [{n}, A]")
        if isinstance(attributes, np.ndarray):
            _check_attribute_values(where, group, attributes)


def _check_attribute_values(where: str, group: str, a: np.ndarray) -> None:
    """Attributes are 0, 1 or :data:`UNKNOWN_ATTRIBUTE` (an h5py dataset is not read here,
    so a block reader stays within one block of memory)."""
    bad = (a != 0) & (a != 1) & (a != UNKNOWN_ATTRIBUTE)
    if bad.any():
        value = a[bad].flat[0]
        raise fail(
            where,
            f"{group}/attributes",
            f"values must be 0, 1 or {UNKNOWN_ATTRIBUTE} (unknown), found {value}",
        )
