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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fghash.atomic import atomic_path
from fghash.errors import FghashError

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
        if n and np.unique(ids).shape[0] != n:
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
    """True when ``path`` is an HDF5 file whose ``format`` attribute is ``fghash.codes``."""
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
