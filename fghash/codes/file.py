"""The HDF5 codes file, schema version 1 (``shared/DESIGN.md``): build, write, read, validate.

A codes file holds the binary codes of one or more splits (``database``, usually also
``query``) with their ids, labels and optional paths, float features and ground-truth
attributes. It is the only thing the learning side (``fghash train``/``encode``) and the
search side (``index/``, ``bench/``) share. Codes are packed in the bit order of
:mod:`fghash.codes.bits`; datasets are chunked in whole rows (:func:`row_chunks`).

Writers write a temporary file in the target folder and rename it, so a crash never
leaves a half-written file under the final name. Readers validate everything with the
per-split checks of :mod:`fghash.codes.checks` and raise :class:`CodesFileError` with
one sentence naming the file, the dataset and the problem. Block-wise reading and
writing, for files larger than memory, is :mod:`fghash.codes.blocks`.

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

from fghash.codes.bits import check_bits, nbytes_for
from fghash.codes.checks import (
    CodesFileError,
    check_codes,
    check_loadable,
    check_split,
    fail,
)
from fghash.codes.room import dataset_bytes, h5_file, strings_bytes
from fghash.errors import FghashError
from fghash.util.atomic import atomic_path

__all__ = [
    "FORMAT",
    "VERSION",
    "Split",
    "CodesFile",
    "make_codes_file",
    "write_codes",
    "read_codes",
    "read_attrs",
    "file_checksum",
    "row_chunks",
    "write_header",
    "check_target",
    "open_hdf5",
    "read_header",
    "decode_text",
]

FORMAT = "fghash.codes"
VERSION = 1
# Rows per HDF5 chunk: whole rows, about 1 MiB of codes per chunk, so a full read is a
# few large sequential reads (h5py's automatic chunking of [N, 8] uint8 is column-wise).
_CHUNK_BYTES = 1 << 20


def decode_text(v: Any) -> str:
    """An HDF5 string (``bytes`` or ``str``) as ``str``; bytes that are not UTF-8 (a file
    name that is not) come back as Python's surrogate escapes, as ``os.fsdecode`` gives."""
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v)


def encode_texts(texts: Iterable[Any]) -> list[bytes]:
    """Strings as the UTF-8 bytes HDF5 stores; a file name that is not UTF-8 (surrogate
    escapes in ``str``) keeps its own bytes, so :func:`decode_text` gives it back."""
    return [str(t).encode("utf-8", "surrogateescape") for t in texts]


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


def _validate(cf: CodesFile, where: str) -> None:
    try:
        bits = check_bits(cf.bits)
    except FghashError as e:
        raise fail(where, "attribute 'bits'", str(e).rstrip(".")) from None
    if "database" not in cf.splits:
        raise fail(where, "/database", "missing; every codes file needs a database split")
    for name, s in cf.splits.items():
        g = f"/{name}"
        if not name or "/" in name:
            raise fail(where, g, "split names must be non-empty and contain no '/'")
        n = check_codes(where, g, s.codes, bits)
        check_split(
            where,
            g,
            n,
            ids=s.ids,
            labels=s.labels,
            paths=s.paths,
            features=s.features,
            attributes=s.attributes,
        )
        if s.attributes is not None and cf.attribute_names is not None:
            if len(cf.attribute_names) != s.attributes.shape[1]:
                raise fail(
                    where,
                    "/attribute_names",
                    f"has {len(cf.attribute_names)} names but {g}/attributes has "
                    f"{s.attributes.shape[1]} columns",
                )
    widths = {
        s.labels.shape[1] for s in cf.splits.values() if s.labels is not None and s.labels.ndim == 2
    }
    kinds = {s.labels.ndim for s in cf.splits.values() if s.labels is not None}
    if len(kinds) > 1 or len(widths) > 1:
        raise fail(where, "labels", "all splits must use the same label form (and width)")


def row_chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...] | None:
    """HDF5 chunk shape for a dataset of ``shape``: whole rows, about 1 MiB a chunk
    (None for an empty dataset, which HDF5 stores unchunked)."""
    if shape[0] == 0:
        return None
    row = int(np.prod(shape[1:], dtype=np.int64)) * itemsize or 1
    rows = max(1, min(shape[0], _CHUNK_BYTES // row))
    return (rows, *shape[1:])


def _create(g: Any, name: str, data: np.ndarray, dtype: Any) -> Any:
    data = np.ascontiguousarray(data, dtype=dtype)
    chunks = row_chunks(data.shape, data.dtype.itemsize)
    return g.create_dataset(name, data=data, chunks=chunks)


def write_header(
    f: Any,
    bits: int,
    method: str,
    config: Mapping[str, Any] | None,
    created: str | None = None,
) -> None:
    """Write the file attributes of schema version 1 onto the open HDF5 file ``f``."""
    f.attrs["format"] = FORMAT
    f.attrs["version"] = VERSION
    f.attrs["bits"] = int(bits)
    f.attrs["bit_order"] = "little"
    f.attrs["method"] = str(method)
    f.attrs["config"] = json.dumps(dict(config or {}), sort_keys=True, default=str)
    f.attrs["created"] = created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse to write ``path`` when it exists (unless ``overwrite``) or its folder does not."""
    if path.exists() and not overwrite:
        raise CodesFileError(f"{path} already exists; pass --force to replace it.")
    if not path.parent.is_dir():
        raise CodesFileError(f"{path}: the folder {path.parent} does not exist.")


def write_codes(path: str | os.PathLike[str], cf: CodesFile, *, overwrite: bool = True) -> Path:
    """Write ``cf`` to ``path`` atomically (temporary file in the same folder, then rename).

    Validates first; on any error the file at ``path`` (if any) is left untouched.
    Returns the path written.
    """
    import h5py

    path = Path(path)
    cf.validate()
    check_target(path, overwrite)
    with atomic_path(path) as tmp, h5_file(tmp, "w", _codes_file_bytes(cf)) as (f, _):
        write_header(f, cf.bits, cf.method, cf.config, cf.created)
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
                paths = encode_texts(s.paths)
                g.create_dataset("paths", data=paths, dtype=h5py.string_dtype("utf-8"))
            if s.features is not None:
                d = _create(g, "features", s.features, np.float32)
                d.attrs["kind"] = s.features_kind or "unknown"
            if s.attributes is not None:
                _create(g, "attributes", s.attributes, np.uint8)
    return path


def _codes_file_bytes(cf: CodesFile) -> int:
    """Upper bound of the bytes :func:`write_codes` writes for ``cf`` (see
    :mod:`fghash.codes.room`)."""
    total = 2 * len(json.dumps(dict(cf.config or {}), default=str))
    total += strings_bytes(cf.attribute_names or [])
    for s in cf.splits.values():
        labels = 8 if s.labels is not None and np.ndim(s.labels) == 1 else 1
        for a, size in ((s.codes, 1), (s.ids, 8), (s.labels, labels), (s.features, 4)):
            if a is not None:
                total += dataset_bytes(np.shape(a), size, row_chunks(np.shape(a), size))
        if s.attributes is not None:
            shape = np.shape(s.attributes)
            total += dataset_bytes(shape, 1, row_chunks(shape, 1))
        if s.paths is not None:
            total += strings_bytes(s.paths)
    return total


def open_hdf5(path: Path) -> Any:
    """Open ``path`` read-only as an h5py File, or raise one clear :class:`CodesFileError`."""
    import h5py

    if not path.exists():
        raise CodesFileError(f"{path}: no such file.")
    if path.is_dir():
        raise CodesFileError(f"{path} is a folder, not a codes file.")
    try:
        return h5py.File(path, "r")
    except OSError:
        raise CodesFileError(f"{path} is not an HDF5 file (or it is damaged).") from None


def read_header(f: Any, where: str) -> dict[str, Any]:
    """Check the file attributes of an open codes file; ``{bits, method, config, created}``."""
    attrs = dict(f.attrs)

    def s(v: Any) -> Any:
        return v.decode() if isinstance(v, bytes) else v

    fmt = s(attrs.get("format"))
    if fmt != FORMAT:
        raise fail(
            where,
            "attribute 'format'",
            f"expected {FORMAT!r}, got {fmt!r}; this is not an fghash codes file",
        )
    version = attrs.get("version")
    if version is None or int(version) != VERSION:
        raise fail(
            where,
            "attribute 'version'",
            f"schema version {version} is not supported; this fghash reads version {VERSION}",
        )
    order = s(attrs.get("bit_order", "little"))
    if order != "little":
        raise fail(where, "attribute 'bit_order'", f"expected 'little', got {order!r}")
    if "bits" not in attrs:
        raise fail(where, "attribute 'bits'", "missing")
    cfg_text = s(attrs.get("config", "{}"))
    try:
        config = json.loads(cfg_text) if cfg_text else {}
    except json.JSONDecodeError:
        raise fail(where, "attribute 'config'", "is not valid JSON") from None
    return {
        "bits": int(attrs["bits"]),
        "method": str(s(attrs.get("method", "unknown"))),
        "config": config,
        "created": s(attrs.get("created")),
    }


def read_attrs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read only the header and the split sizes (cheap; for ``fghash info``)."""
    path = Path(path)
    with open_hdf5(path) as f:
        head = read_header(f, str(path))
        splits: dict[str, Any] = {}
        for name, g in f.items():
            if not hasattr(g, "keys"):
                continue
            if "codes" not in g:
                raise fail(str(path), f"/{name}/codes", "missing")
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
    with open_hdf5(path) as f:
        head = read_header(f, where)
        names = [k for k, v in f.items() if hasattr(v, "keys")]
        wanted = list(names) if splits is None else list(splits)
        for w in wanted:
            if w not in names:
                raise CodesFileError(
                    f"{where} has no split {w!r}; it has {', '.join(sorted(names)) or 'none'}."
                )
        if "database" not in names:
            raise fail(where, "/database", "missing; every codes file needs a database split")
        out: dict[str, Split] = {}
        for name in wanted:
            g = f[name]
            if "codes" not in g:
                raise fail(where, f"/{name}/codes", "missing")
            if "ids" not in g:
                raise fail(where, f"/{name}/ids", "missing")
            skip = [
                d for d, load in (("features", features), ("attributes", attributes)) if not load
            ]
            check_loadable(where, f"/{name}", g, skip)
            paths = None
            if "paths" in g:
                paths = [decode_text(p) for p in g["paths"][()]]
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
            attr_names = [decode_text(a) for a in f["attribute_names"][()]]
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
