"""The HDF5 codes file, schema version 1 (``shared/DESIGN.md``), and bit packing.

A codes file holds the binary codes of one or more splits (``database``, usually also
``query``) with their ids, labels and optional paths, float features and ground-truth
attributes. It is the only thing the learning side (``fghash train``/``encode``) and the
search side (``index/``, ``bench/``) share.

Bit order: bit ``i`` of an item is ``(codes[:, i >> 3] >> (i & 7)) & 1``, which is
``numpy.packbits(..., bitorder="little")`` and the order FAISS binary indexes read. Bit
value 1 means sign +1. Unused high bits of the last byte are 0.

Writers write a temporary file in the target folder and rename it, so a crash never
leaves a half-written file under the final name. Readers validate everything and raise
:class:`CodesFileError` with one sentence naming the file, the dataset and the problem.

This module imports numpy and h5py only (never torch or FAISS).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fghash.errors import FghashError
from fghash.util.atomic import atomic_path

__all__ = [
    "FORMAT",
    "VERSION",
    "MAX_BITS",
    "CodesFileError",
    "Split",
    "CodesFile",
    "nbytes_for",
    "pack_bits",
    "unpack_bits",
    "signs_to_codes",
    "codes_to_signs",
    "hex_to_code",
    "code_to_hex",
    "write_codes",
    "read_codes",
    "read_attrs",
    "file_checksum",
    "is_codes_file",
    "ids_unique",
    "SplitReader",
    "IdsChecker",
    "open_split",
    "CodesWriter",
    "append_codes",
]

FORMAT = "fghash.codes"
VERSION = 1
MAX_BITS = 1024
# Rows per HDF5 chunk: whole rows, about 1 MiB of codes per chunk, so a full read is a
# few large sequential reads (h5py's automatic chunking of [N, 8] uint8 is column-wise).
_CHUNK_BYTES = 1 << 20


class CodesFileError(FghashError):
    """A codes file is missing, unreadable, or does not follow schema version 1."""


def nbytes_for(bits: int) -> int:
    """Bytes per packed code: ``ceil(bits / 8)``."""
    return (int(bits) + 7) // 8


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise FghashError(f"bits must be an integer from 1 to {MAX_BITS}, got {bits!r}.")
    if not 1 <= int(bits) <= MAX_BITS:
        raise FghashError(f"bits must be from 1 to {MAX_BITS}, got {bits}.")
    return int(bits)


def pack_bits(bits01: np.ndarray) -> np.ndarray:
    """Pack a {0,1} array ``[N, bits]`` into uint8 ``[N, ceil(bits/8)]``, little bit order.

    Any non-zero entry counts as 1. Unused high bits of the last byte are 0.
    """
    a = np.asarray(bits01)
    if a.ndim != 2:
        raise FghashError(f"pack_bits expects a 2-d [N, bits] array, got shape {a.shape}.")
    return np.packbits(a != 0, axis=1, bitorder="little")


def unpack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unpack uint8 ``[N, ceil(bits/8)]`` into a {0,1} uint8 array ``[N, bits]``."""
    bits = _check_bits(bits)
    c = np.asarray(codes)
    if c.dtype != np.uint8 or c.ndim != 2 or c.shape[1] != nbytes_for(bits):
        raise FghashError(
            f"packed codes for {bits} bits must be uint8 [N, {nbytes_for(bits)}], "
            f"got {c.dtype} {c.shape}."
        )
    return np.unpackbits(c, axis=1, count=bits, bitorder="little")


def signs_to_codes(x: np.ndarray) -> np.ndarray:
    """Binarise real values ``[N, bits]`` by sign and pack them: ``x >= 0`` gives bit 1 (+1).

    ``sgn(0)`` is taken as +1 so every real vector has exactly one code.
    """
    a = np.asarray(x)
    if a.ndim != 2:
        raise FghashError(f"signs_to_codes expects a 2-d [N, bits] array, got {a.shape}.")
    if np.issubdtype(a.dtype, np.floating) and np.isnan(a).any():
        raise FghashError("cannot binarise values that contain NaN.")
    return pack_bits(a >= 0)


def codes_to_signs(codes: np.ndarray, bits: int, dtype: Any = np.float32) -> np.ndarray:
    """Unpack codes to a ±1 array ``[N, bits]`` (bit 1 → +1, bit 0 → -1)."""
    u = unpack_bits(codes, bits).astype(dtype)
    return u * 2 - 1


def code_to_hex(code: np.ndarray) -> str:
    """One packed code (uint8 ``[nbytes]``) as hex, byte 0 first (bits 0..7 of the code)."""
    return bytes(np.asarray(code, dtype=np.uint8).ravel()).hex()


def hex_to_code(text: str, bits: int) -> np.ndarray:
    """Parse a hex string (byte 0 first, as :func:`code_to_hex` writes) into uint8 ``[1, nbytes]``.

    A leading ``0x`` (as many tools print hex) is accepted and dropped, as are spaces and
    underscores. The hex must hold exactly ``ceil(bits/8)`` bytes (two digits each) and
    leave the unused high bits at 0.
    """
    bits = _check_bits(bits)
    t = text.strip().lower().replace(" ", "").replace("_", "")
    if t.startswith("0x"):
        t = t[2:]
    want = nbytes_for(bits)
    if not t or any(c not in "0123456789abcdef" for c in t):
        raise FghashError(
            f"code {text!r} is not a hexadecimal string (digits 0-9 and a-f, byte 0 first)."
        )
    if len(t) % 2:
        raise FghashError(
            f"code {text!r} has an odd number of hex digits ({len(t)}); each byte takes two, "
            f"so {bits}-bit codes take {2 * want}."
        )
    raw = bytes.fromhex(t)
    if len(raw) != want:
        raise FghashError(
            f"code {text!r} has {len(raw)} bytes but the index holds {bits}-bit codes "
            f"({want} bytes, {2 * want} hex digits)."
        )
    arr = np.frombuffer(raw, dtype=np.uint8).reshape(1, want).copy()
    _check_padding_zero(arr, bits, f"code {text!r}")
    return arr


def _check_padding_zero(codes: np.ndarray, bits: int, where: str) -> None:
    spare = nbytes_for(bits) * 8 - bits
    if spare and codes.shape[0]:
        mask = np.uint8((0xFF << (8 - spare)) & 0xFF)
        if np.any(codes[:, -1] & mask):
            raise FghashError(
                f"{where} sets bits above bit {bits - 1}; unused high bits must be 0."
            )


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


@dataclass
class Split:
    """One split of a codes file (e.g. ``database`` or ``query``).

    ``codes`` is uint8 ``[N, ceil(bits/8)]``; every other array has N rows.
    """

    codes: np.ndarray  # uint8 [N, ceil(bits/8)], packed little bit order
    ids: np.ndarray | None = None  # int64 [N], unique; None means 0..N-1
    labels: np.ndarray | None = None  # int64 [N] single-label, or uint8 [N, C] multi-hot
    paths: list[str] | None = None  # image paths relative to the data set root
    features: np.ndarray | None = None  # float32 [N, D], continuous embedding
    features_kind: str | None = None  # what `features` is: "relaxed_code", "backbone", ...
    attributes: np.ndarray | None = None  # uint8 [N, A], ground-truth visual attributes

    def __post_init__(self) -> None:
        self.codes = np.ascontiguousarray(self.codes)
        if self.ids is None:
            self.ids = np.arange(len(self.codes), dtype=np.int64)
        self.ids = np.asarray(self.ids)
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
        if self.features is not None:
            self.features = np.asarray(self.features)
        if self.attributes is not None:
            self.attributes = np.asarray(self.attributes)
        if self.paths is not None:
            self.paths = [str(p) for p in self.paths]

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    @property
    def multilabel(self) -> bool:
        """True when labels are a multi-hot ``[N, C]`` matrix."""
        return self.labels is not None and self.labels.ndim == 2


@dataclass
class CodesFile:
    """Everything a codes file holds. ``splits`` maps split name → :class:`Split`."""

    bits: int  # code length, 1..1024
    splits: dict[str, Split]  # at least "database"
    method: str = "unknown"  # what made the codes: "a2net", "itq", ...
    config: dict[str, Any] = field(default_factory=dict)  # the resolved config that made them
    attribute_names: list[str] | None = None  # names of the columns of `attributes`
    created: str | None = None  # ISO-8601; set on write when None
    path: Path | None = None  # where it was read from, if it was

    @property
    def nbytes(self) -> int:
        return nbytes_for(self.bits)

    def __getitem__(self, split: str) -> Split:
        try:
            return self.splits[split]
        except KeyError:
            where = f"{self.path}" if self.path else "the codes file"
            raise CodesFileError(
                f"{where} has no split {split!r}; it has {', '.join(sorted(self.splits))}."
            ) from None

    def validate(self) -> None:
        """Check the in-memory contents against schema version 1."""
        _validate(self, str(self.path or "<codes>"))


def _fail(path: str, dataset: str, problem: str) -> CodesFileError:
    return CodesFileError(f"{path}: {dataset}: {problem}.")


def _validate(cf: CodesFile, where: str) -> None:
    try:
        bits = _check_bits(cf.bits)
    except FghashError as e:
        raise _fail(where, "attribute 'bits'", str(e).rstrip(".")) from None
    if "database" not in cf.splits:
        raise _fail(where, "/database", "missing; every codes file needs a database split")
    nb = nbytes_for(bits)
    for name, s in cf.splits.items():
        g = f"/{name}"
        if not name or "/" in name:
            raise _fail(where, g, "split names must be non-empty and contain no '/'")
        c = s.codes
        if c.dtype != np.uint8 or c.ndim != 2 or c.shape[1] != nb:
            raise _fail(
                where,
                f"{g}/codes",
                f"expected uint8 [N, {nb}] for {bits} bits, got {c.dtype} {list(c.shape)}",
            )
        n = c.shape[0]
        try:
            _check_padding_zero(c, bits, "codes")
        except FghashError as e:
            raise _fail(where, f"{g}/codes", str(e).rstrip(".")) from None
        ids = s.ids
        if ids.ndim != 1 or ids.shape[0] != n or not np.issubdtype(ids.dtype, np.integer):
            raise _fail(
                where, f"{g}/ids", f"expected int64 [{n}], got {ids.dtype} {list(ids.shape)}"
            )
        if n and not ids_unique(ids):
            raise _fail(where, f"{g}/ids", "ids must be unique within the split")
        if s.labels is not None:
            lab = s.labels
            if lab.ndim == 1:
                if lab.shape[0] != n or not np.issubdtype(lab.dtype, np.integer):
                    raise _fail(
                        where,
                        f"{g}/labels",
                        f"expected int64 [{n}] or uint8 [{n}, C], got {lab.dtype} {list(lab.shape)}",
                    )
            elif lab.ndim == 2:
                if lab.shape[0] != n or lab.dtype not in (np.uint8, np.bool_):
                    raise _fail(
                        where,
                        f"{g}/labels",
                        f"multi-hot labels must be uint8 [{n}, C], got {lab.dtype} {list(lab.shape)}",
                    )
            else:
                raise _fail(where, f"{g}/labels", f"expected 1 or 2 dimensions, got {lab.ndim}")
        if s.paths is not None and len(s.paths) != n:
            raise _fail(where, f"{g}/paths", f"expected {n} paths, got {len(s.paths)}")
        if s.features is not None:
            f = s.features
            if f.ndim != 2 or f.shape[0] != n or not np.issubdtype(f.dtype, np.floating):
                raise _fail(
                    where,
                    f"{g}/features",
                    f"expected float32 [{n}, D], got {f.dtype} {list(f.shape)}",
                )
        if s.attributes is not None:
            a = s.attributes
            if a.ndim != 2 or a.shape[0] != n:
                raise _fail(
                    where,
                    f"{g}/attributes",
                    f"expected uint8 [{n}, A], got {a.dtype} {list(a.shape)}",
                )
            if cf.attribute_names is not None and len(cf.attribute_names) != a.shape[1]:
                raise _fail(
                    where,
                    "/attribute_names",
                    f"has {len(cf.attribute_names)} names but {g}/attributes has {a.shape[1]} columns",
                )
    widths = {
        s.labels.shape[1] for s in cf.splits.values() if s.labels is not None and s.labels.ndim == 2
    }
    kinds = {s.labels.ndim for s in cf.splits.values() if s.labels is not None}
    if len(kinds) > 1 or len(widths) > 1:
        raise _fail(where, "labels", "all splits must use the same label form (and width)")


def _row_chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...] | None:
    if shape[0] == 0:
        return None
    row = int(np.prod(shape[1:], dtype=np.int64)) * itemsize or 1
    rows = max(1, min(shape[0], _CHUNK_BYTES // row))
    return (rows, *shape[1:])


def _create(g: Any, name: str, data: np.ndarray, dtype: Any) -> Any:
    data = np.ascontiguousarray(data, dtype=dtype)
    chunks = _row_chunks(data.shape, data.dtype.itemsize)
    return g.create_dataset(name, data=data, chunks=chunks)


def write_codes(path: str | os.PathLike[str], cf: CodesFile, *, overwrite: bool = True) -> Path:
    """Write ``cf`` to ``path`` atomically (temporary file in the same folder, then rename).

    Validates first; on any error the file at ``path`` (if any) is left untouched.
    Returns the path written.
    """
    import h5py

    path = Path(path)
    cf.validate()
    if path.exists() and not overwrite:
        raise CodesFileError(f"{path} already exists; pass --force to replace it.")
    if not path.parent.exists():
        raise CodesFileError(f"{path}: the folder {path.parent} does not exist.")
    created = cf.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["bits"] = int(cf.bits)
        f.attrs["bit_order"] = "little"
        f.attrs["method"] = str(cf.method)
        f.attrs["config"] = json.dumps(cf.config, sort_keys=True, default=str)
        f.attrs["created"] = created
        if cf.attribute_names is not None:
            f.create_dataset(
                "attribute_names",
                data=list(cf.attribute_names),
                dtype=h5py.string_dtype("utf-8"),
            )
        for name, s in cf.splits.items():
            g = f.create_group(name)
            _create(g, "codes", s.codes, np.uint8)
            _create(g, "ids", s.ids, np.int64)
            if s.labels is not None:
                ldt = np.int64 if s.labels.ndim == 1 else np.uint8
                _create(g, "labels", s.labels, ldt)
            if s.paths is not None:
                g.create_dataset("paths", data=s.paths, dtype=h5py.string_dtype("utf-8"))
            if s.features is not None:
                d = _create(g, "features", s.features, np.float32)
                d.attrs["kind"] = s.features_kind or "unknown"
            if s.attributes is not None:
                _create(g, "attributes", s.attributes, np.uint8)
    return path


def _open(path: Path) -> Any:
    import h5py

    if not path.exists():
        raise CodesFileError(f"{path}: no such file.")
    if path.is_dir():
        raise CodesFileError(f"{path} is a folder, not a codes file.")
    try:
        return h5py.File(path, "r")
    except OSError:
        raise CodesFileError(f"{path} is not an HDF5 file (or it is damaged).") from None


def _check_header(f: Any, where: str) -> dict[str, Any]:
    attrs = dict(f.attrs)

    def s(v: Any) -> Any:
        return v.decode() if isinstance(v, bytes) else v

    fmt = s(attrs.get("format"))
    if fmt != FORMAT:
        raise _fail(
            where,
            "attribute 'format'",
            f"expected {FORMAT!r}, got {fmt!r}; this is not an fghash codes file",
        )
    version = attrs.get("version")
    if version is None or int(version) != VERSION:
        raise _fail(
            where,
            "attribute 'version'",
            f"schema version {version} is not supported; this fghash reads version {VERSION}",
        )
    order = s(attrs.get("bit_order", "little"))
    if order != "little":
        raise _fail(where, "attribute 'bit_order'", f"expected 'little', got {order!r}")
    if "bits" not in attrs:
        raise _fail(where, "attribute 'bits'", "missing")
    cfg_text = s(attrs.get("config", "{}"))
    try:
        config = json.loads(cfg_text) if cfg_text else {}
    except json.JSONDecodeError:
        raise _fail(where, "attribute 'config'", "is not valid JSON") from None
    return {
        "bits": int(attrs["bits"]),
        "method": str(s(attrs.get("method", "unknown"))),
        "config": config,
        "created": s(attrs.get("created")),
    }


def read_attrs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read only the header and the split sizes (cheap; for ``fghash info``)."""
    path = Path(path)
    with _open(path) as f:
        head = _check_header(f, str(path))
        splits: dict[str, Any] = {}
        for name, g in f.items():
            if not hasattr(g, "keys"):
                continue
            if "codes" not in g:
                raise _fail(str(path), f"/{name}/codes", "missing")
            info: dict[str, Any] = {"n": int(g["codes"].shape[0]), "datasets": sorted(g.keys())}
            if "labels" in g:
                lab = g["labels"]
                info["labels"] = "multi-hot" if lab.ndim == 2 else "single"
            if "features" in g:
                info["features"] = {
                    "dim": int(g["features"].shape[1]),
                    "kind": str(g["features"].attrs.get("kind", "unknown")),
                }
            splits[name] = info
        head["splits"] = splits
        head["attribute_names"] = (
            int(f["attribute_names"].shape[0]) if "attribute_names" in f else 0
        )
    return head


def read_codes(
    path: str | os.PathLike[str],
    splits: Iterable[str] | None = None,
    *,
    features: bool = True,
    attributes: bool = True,
) -> CodesFile:
    """Read and validate a codes file.

    ``splits`` limits which splits are loaded (default: all); ``features=False`` and
    ``attributes=False`` skip those (possibly large) datasets.
    Raises :class:`CodesFileError` naming the file, dataset and problem.
    """
    path = Path(path)
    where = str(path)
    with _open(path) as f:
        head = _check_header(f, where)
        names = [k for k, v in f.items() if hasattr(v, "keys")]
        wanted = list(names) if splits is None else list(splits)
        for w in wanted:
            if w not in names:
                raise CodesFileError(
                    f"{where} has no split {w!r}; it has {', '.join(sorted(names)) or 'none'}."
                )
        if "database" not in names:
            raise _fail(where, "/database", "missing; every codes file needs a database split")
        out: dict[str, Split] = {}
        for name in wanted:
            g = f[name]
            if "codes" not in g:
                raise _fail(where, f"/{name}/codes", "missing")
            if "ids" not in g:
                raise _fail(where, f"/{name}/ids", "missing")
            paths = None
            if "paths" in g:
                paths = [p.decode() if isinstance(p, bytes) else str(p) for p in g["paths"][()]]
            feats = kind = None
            if features and "features" in g:
                feats = g["features"][()]
                kind = str(g["features"].attrs.get("kind", "unknown"))
            out[name] = Split(
                codes=g["codes"][()],
                ids=g["ids"][()],
                labels=g["labels"][()] if "labels" in g else None,
                paths=paths,
                features=feats,
                features_kind=kind,
                attributes=g["attributes"][()] if attributes and "attributes" in g else None,
            )
        attr_names = None
        if "attribute_names" in f:
            attr_names = [
                a.decode() if isinstance(a, bytes) else str(a) for a in f["attribute_names"][()]
            ]
    cf = CodesFile(
        bits=head["bits"],
        splits=out,
        method=head["method"],
        config=head["config"],
        attribute_names=attr_names if attributes else None,
        created=head["created"],
        path=path,
    )
    if "database" not in cf.splits:
        # Reading only other splits: validate those, with a stand-in check for database.
        probe = CodesFile(
            bits=cf.bits,
            splits={"database": Split(np.zeros((0, cf.nbytes), np.uint8)), **out},
            attribute_names=cf.attribute_names,
        )
        _validate(probe, where)
    else:
        _validate(cf, where)
    return cf


def is_codes_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is an HDF5 file whose ``format`` attribute is ``fghash.codes.file``."""
    try:
        import h5py

        with h5py.File(path, "r") as f:
            fmt = f.attrs.get("format")
            return (fmt.decode() if isinstance(fmt, bytes) else fmt) == FORMAT
    except (OSError, ValueError):
        return False


def file_checksum(path: str | os.PathLike[str], block: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, as ``"sha256:<hex>"`` (stored beside an index)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def make_codes_file(
    bits: int,
    database: Split,
    query: Split | None = None,
    *,
    method: str = "unknown",
    config: Mapping[str, Any] | None = None,
    attribute_names: Sequence[str] | None = None,
) -> CodesFile:
    """Convenience constructor for the usual database (+ query) file."""
    splits = {"database": database}
    if query is not None:
        splits["query"] = query
    return CodesFile(
        bits=bits,
        splits=splits,
        method=method,
        config=dict(config or {}),
        attribute_names=list(attribute_names) if attribute_names is not None else None,
    )


__all__ += ["make_codes_file"]


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
        self._f = _open(self.path)
        try:
            head = _check_header(self._f, where)
            self.bits = _check_bits(head["bits"])
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
        g, name, nb = self._g, f"/{self.split}", nbytes_for(self.bits)
        for ds in ("codes", "ids"):
            if ds not in g:
                raise _fail(where, f"{name}/{ds}", "missing")
        c = g["codes"]
        if c.dtype != np.uint8 or c.ndim != 2 or c.shape[1] != nb:
            raise _fail(
                where,
                f"{name}/codes",
                f"expected uint8 [N, {nb}] for {self.bits} bits, got {c.dtype} {list(c.shape)}",
            )
        n = int(c.shape[0])
        ids = g["ids"]
        if ids.ndim != 1 or ids.shape[0] != n or not np.issubdtype(ids.dtype, np.integer):
            raise _fail(
                where, f"{name}/ids", f"expected int64 [{n}], got {ids.dtype} {list(ids.shape)}"
            )
        for ds in ("labels", "paths", "features", "attributes"):
            if ds in g and (g[ds].ndim < 1 or g[ds].shape[0] != n):
                raise _fail(where, f"{name}/{ds}", f"expected {n} rows, got {list(g[ds].shape)}")
        if "labels" in g:
            lab = g["labels"]
            if lab.ndim > 2 or (lab.ndim == 1 and not np.issubdtype(lab.dtype, np.integer)):
                raise _fail(
                    where,
                    f"{name}/labels",
                    f"expected int64 [{n}] or uint8 [{n}, C], got {lab.dtype} {list(lab.shape)}",
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
            return [p.decode() if isinstance(p, bytes) else str(p) for p in rows]
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
        spare = nbytes_for(self.bits) * 8 - self.bits
        if not spare:  # whole bytes: no bit beyond `bits` exists
            return
        mask = np.uint8((0xFF << (8 - spare)) & 0xFF)
        for s, e in self.blocks(rows):
            if np.any(self._g["codes"][s:e, -1] & mask):
                raise _fail(
                    str(self.path),
                    f"/{self.split}/codes",
                    f"codes sets bits above bit {self.bits - 1}; unused high bits must be 0",
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
            raise _fail(str(r.path), f"/{r.split}/ids", "ids must be unique within the split")


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
        import h5py

        self.path = Path(path)
        self.bits = _check_bits(bits)
        if self.path.exists() and not overwrite:
            raise CodesFileError(f"{self.path} already exists; pass --force to replace it.")
        if not self.path.parent.is_dir():
            raise CodesFileError(f"{self.path}: the folder {self.path.parent} does not exist.")
        self._atomic = atomic_path(self.path)
        self.tmp = self._atomic.__enter__()
        self._f = h5py.File(self.tmp, "w")
        f = self._f
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["bits"] = self.bits
        f.attrs["bit_order"] = "little"
        f.attrs["method"] = str(method)
        f.attrs["config"] = json.dumps(dict(config or {}), sort_keys=True, default=str)
        f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

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

        def make(ds: str, shape: tuple[int, ...], dtype: Any) -> Any:
            chunks = _row_chunks(shape, np.dtype(dtype).itemsize)
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

    def write(self, name: str, start: int, **data: Any) -> None:
        """Rows ``start:start+len`` of split ``name``: ``codes=``, ``ids=``, ``labels=``..."""
        g = self._f[name]
        for ds, value in data.items():
            if value is None:
                continue
            if ds == "codes":
                try:
                    _check_padding_zero(np.asarray(value), self.bits, "codes")
                except FghashError as e:
                    raise _fail(str(self.path), f"/{name}/codes", str(e).rstrip(".")) from None
            if ds == "paths":
                value = [str(p) for p in value]
            g[ds][start : start + len(value)] = value

    def set_attribute_names(self, names: Sequence[str]) -> None:
        import h5py

        self._f.create_dataset(
            "attribute_names", data=list(names), dtype=h5py.string_dtype("utf-8")
        )

    def commit(self) -> Path:
        """Check ids, close the file and rename it onto ``path``."""
        for name, g in self._f.items():
            if hasattr(g, "keys") and not ids_unique(g["ids"][()]):
                raise _fail(str(self.path), f"/{name}/ids", "ids must be unique within the split")
        self._f.close()
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
    path: str | os.PathLike[str], split: str, new: Split, *, block: int = 1 << 20
) -> Path:
    """Append the rows of ``new`` to split ``split`` of the codes file at ``path``.

    The file is rewritten block by block into a temporary file and renamed over
    ``path``, so a failure leaves it as it was. ``new`` must carry the datasets the
    split has (labels of the same form, paths, features of the same width, attributes)
    and ids not already in the split. Other splits are copied unchanged.
    """
    path = Path(path)
    with open_split(path, split) as r:
        where = f"{path}: /{split}"
        nb = nbytes_for(r.bits)
        if new.codes.dtype != np.uint8 or new.codes.ndim != 2 or new.codes.shape[1] != nb:
            raise CodesFileError(
                f"{where} holds {r.bits}-bit codes ({nb} bytes) but the new codes are "
                f"{new.codes.dtype} {list(new.codes.shape)}."
            )
        for ds, have in (
            ("labels", new.labels is not None),
            ("paths", new.paths is not None),
            ("features", new.features is not None),
            ("attributes", new.attributes is not None),
        ):
            if r.has(ds) != have:
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
        both = np.concatenate([old_ids, np.asarray(new.ids, dtype=np.int64)])
        if not ids_unique(both):
            dup = np.intersect1d(old_ids, new.ids)
            what = f"id {int(dup[0])} is already in the split" if dup.size else "ids repeat"
            raise CodesFileError(f"{where}: cannot append: {what}; ids must stay unique.")
    cf = read_attrs(path)
    with (
        _open(path) as src,
        CodesWriter(
            path, cf["bits"], method=cf["method"], config=cf["config"], overwrite=True
        ) as w,
    ):
        if "attribute_names" in src:
            w.set_attribute_names(
                [
                    s_.decode() if isinstance(s_, bytes) else str(s_)
                    for s_ in src["attribute_names"][()]
                ]
            )
        for name, g in src.items():
            if not hasattr(g, "keys"):
                continue
            n_old = int(g["codes"].shape[0])
            extra = len(new) if name == split else 0
            lab = g["labels"] if "labels" in g else None
            feats = g["features"] if "features" in g else None
            w.add_split(
                name,
                n_old + extra,
                labels=None
                if lab is None
                else ("single" if lab.ndim == 1 else ("multi", lab.shape[1])),
                paths="paths" in g,
                features=None
                if feats is None
                else (feats.shape[1], str(feats.attrs.get("kind", "unknown"))),
                attributes=g["attributes"].shape[1] if "attributes" in g else None,
            )
            for s0 in range(0, n_old, block):
                e0 = min(n_old, s0 + block)
                w.write(name, s0, **{ds: _rows(g[ds], s0, e0) for ds in g.keys()})
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


def _rows(ds: Any, start: int, stop: int) -> Any:
    rows = ds[start:stop]
    if ds.dtype.kind == "O":
        return [p.decode() if isinstance(p, bytes) else str(p) for p in rows]
    return rows
