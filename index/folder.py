"""The index bundle folder: its file names, its ``index.json``, its atomic replacement.

Layout of a bundle folder ``PATH``::

    PATH/index.json    format, version, kind, bits, dim, padding, params, ntotal, the
                       codes file it came from (path, split, sha256, method, origin),
                       creation time; written by every back end
    PATH/index.faiss   FAISS bundles only (:mod:`index.faiss_bundle`), with its size,
                       first bytes and SHA-256 recorded in ``index.json`` (``index_file``)
    PATH/items.h5      FAISS bundles only: ids, labels, paths of the items, in index order

A Milvus bundle (:mod:`index.milvus`) holds ``index.json`` alone, naming the collection.
This module knows the format and nothing of the back ends; :mod:`index.bundle` picks
the back end from the recorded ``kind``.

Writing is atomic: :func:`bundle_folder` yields a temporary folder beside ``PATH`` that
is switched into place on success (:mod:`index.snapshot`), so an interrupted save never
leaves a half bundle under ``PATH`` and a failed one never touches an existing bundle.
The temporary folder's name carries the process id
(:func:`fghash.util.atomic.temp_prefix`); one left by a killed process is removed by
the next command on the bundle.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fghash.codes import SplitReader, file_checksum, nbytes_for
from fghash.errors import FghashError
from fghash.util.atomic import default_folder_mode, temp_prefix
from fghash.util.locks import writer_lock
from index.checks import codes_origin
from index.snapshot import new_revision, recover, swap_in, tidy

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "INDEX_FILE",
    "ITEMS_FILE",
    "META_FILE",
    "is_bundle",
    "bundle_path",
    "read_bundle_meta",
    "check_target",
    "bundle_folder",
    "new_folder",
    "folder_mode",
    "base_meta",
    "now_iso",
    "write_meta",
    "shape_digest",
    "codes_source",
]

BUNDLE_FORMAT = "fghash.index"
BUNDLE_VERSION = 1
INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.h5"
META_FILE = "index.json"


def is_bundle(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder with an ``index.json`` (or the index.faiss inside one)."""
    p = Path(path)
    if p.is_file() and p.name == INDEX_FILE:
        p = p.parent
    if not os.path.lexists(p):
        tidy(p)  # a bundle a killed writer had moved aside comes back
    return p.is_dir() and (p / META_FILE).is_file()


def bundle_path(path: str | os.PathLike[str]) -> Path:
    """The bundle folder ``path`` names (the folder, or the ``index.faiss`` inside it)."""
    p = Path(path)
    if p.is_file() and p.name == INDEX_FILE:
        return p.parent
    if not os.path.lexists(p):
        tidy(p)  # a bundle a killed writer had moved aside comes back
    if not p.exists():
        raise FghashError(f"{p}: no such index bundle; build one with 'fghash build-index'.")
    if not p.is_dir() or not (p / META_FILE).is_file():
        raise FghashError(
            f"{p} is not an fghash index bundle (a folder with {INDEX_FILE}, {ITEMS_FILE} "
            f"and {META_FILE}); build one with 'fghash build-index'."
        )
    return p


def read_bundle_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated ``index.json`` of a bundle (cheap: reads neither index nor items)."""
    meta_path = bundle_path(path) / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise FghashError(f"{meta_path} is not valid JSON; the bundle is damaged.") from None
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise FghashError(f"{meta_path} is not an fghash index description.")
    if meta.get("version") != BUNDLE_VERSION:
        raise FghashError(
            f"{meta_path}: bundle version {meta.get('version')!r} is not supported; "
            f"this fghash reads version {BUNDLE_VERSION}."
        )
    for key in ("kind", "bits", "dim", "ntotal", "params"):
        if key not in meta:
            raise FghashError(f"{meta_path} lacks {key!r}; the bundle is damaged.")
    problem = _type_problem(meta) or _shape_problem(meta)
    if not problem and "digest" in meta and meta["digest"] != shape_digest(meta):
        problem = "its kind, bits, dim, ntotal or params are inconsistent with the digest written with them"
    if problem:
        raise FghashError(f"{meta_path}: {problem}; the bundle is damaged or was edited.")
    return meta


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# The type each known key of index.json must have (an edited file gets one sentence, not
# a traceback where the value is used); keys not listed are not read by fghash.
_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "kind": (lambda v: isinstance(v, str), "a string"),
    "bits": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "dim": (lambda v: _is_int(v) and v >= 8 and v % 8 == 0, "a positive multiple of 8"),
    "ntotal": (lambda v: _is_int(v) and v >= 0, "a count (an integer >= 0)"),
    "params": (lambda v: isinstance(v, dict), "an object"),
    "code_bytes": (_is_int, "an integer"),
    "stored_bytes": (_is_int, "an integer"),
    "padded": (lambda v: isinstance(v, bool), "true or false"),
    "codes": (lambda v: v is None or isinstance(v, dict), "an object"),
    "generation": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "revision": (lambda v: isinstance(v, str), "a string"),
    "digest": (lambda v: isinstance(v, str), "a string"),
    "files": (lambda v: isinstance(v, dict), "an object"),
    "index_file": (
        lambda v: (
            isinstance(v, dict)
            and _is_int(v.get("size", 0))
            and all(isinstance(v.get(k, ""), str) for k in ("head", "sha256"))
        ),
        "an object with an integer size and text head and sha256",
    ),
}


def _type_problem(meta: dict[str, Any]) -> str | None:
    for key, (ok, what) in _TYPES.items():
        if key in meta and not ok(meta[key]):
            return f"{key!r} is {json.dumps(meta[key])[:40]}, not {what}"
    return None


def _shape_problem(meta: dict[str, Any]) -> str | None:
    """Code length, stored width and their byte counts must agree (``bits`` edited alone
    would make every distance wrong without this)."""
    bits, dim = meta["bits"], meta["dim"]
    if bits > dim:
        return f"bits {bits} is more than the {dim} bits the index stores (dim)"
    nbytes = nbytes_for(bits)
    if "code_bytes" in meta and meta["code_bytes"] != nbytes:
        return f"code_bytes {meta['code_bytes']} does not match bits {bits} ({nbytes} bytes)"
    if "stored_bytes" in meta and meta["stored_bytes"] != dim // 8:
        return f"stored_bytes {meta['stored_bytes']} does not match dim {dim}"
    if "padded" in meta and meta["padded"] != (dim > 8 * nbytes):
        return f"padded {json.dumps(meta['padded'])} does not match bits {bits} and dim {dim}"
    return None


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse to write a bundle at ``path`` unless it is free, or a bundle and ``overwrite``."""
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FghashError(f"{path} already exists; pass --force to replace it.")
        if not is_bundle(path) or path.is_file():
            raise FghashError(
                f"{path} exists and is not an fghash index bundle; refusing to replace it."
            )
    if not path.parent.is_dir():
        raise FghashError(f"cannot write {path}: the folder {path.parent} does not exist.")


def folder_mode() -> int:
    """The mode bundle folders get: ``os.mkdir``'s, ``0o777`` less the umask."""
    return default_folder_mode()


@contextmanager
def new_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path`` (the umask's mode), removed if the
    block raises and kept otherwise, for the caller to switch in
    (:func:`index.snapshot.swap_in` or :func:`index.snapshot.commit`)."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, folder_mode())
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def bundle_folder(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path``.

    Holds ``path``'s writer lock (re-entrant: callers usually hold it already), finishes
    a dead writer's change first (:func:`index.snapshot.recover`), and switches the new
    folder in with :func:`index.snapshot.swap_in`, so readers see the old bundle or the
    new one. An exception (or Ctrl-C) inside the block removes the temporary folder and
    leaves ``path`` as it was. Only an existing *bundle* is ever replaced, and only
    with ``overwrite=True``.
    """
    path = Path(path)
    with writer_lock(path, what=f"the index {path}"):
        recover(path)
        check_target(path, overwrite)
        with new_folder(path) as tmp:
            yield tmp
        swap_in(tmp, path)


def now_iso() -> str:
    """The current UTC time as ``index.json`` records it (``created``, ``updated``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def base_meta(kind: str, bits: int, dim: int, **fields: Any) -> dict[str, Any]:
    """An ``index.json``: the keys every back end writes (format, version, kind, bits,
    dim, code_bytes), the back end's ``fields`` in their order, and ``created``."""
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "kind": kind,
        "bits": bits,
        "dim": dim,
        "code_bytes": nbytes_for(bits),
        "generation": 1,
        **fields,
        "created": now_iso(),
    }


def shape_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of the fields that say how to read the index (kind, bits, dim, ntotal,
    params): recorded as ``digest``, so an edit of one of them alone (``bits`` 48 → 44
    keeps every byte count) is caught instead of making every distance wrong."""
    vital = {key: meta.get(key) for key in _DIGEST_KEYS}
    return hashlib.sha256(json.dumps(vital, sort_keys=True).encode("utf-8")).hexdigest()


_DIGEST_KEYS = ("kind", "bits", "dim", "ntotal", "params")


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    """Write ``index.json`` into ``folder`` with a fresh ``revision`` (the name of this
    version of the bundle, :mod:`index.snapshot`) and its ``digest``."""
    meta["revision"] = new_revision()
    meta["digest"] = shape_digest(meta)
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n", "utf-8")


def codes_source(r: SplitReader, checksum: str | None = None) -> dict[str, Any]:
    """``index.json``'s record of the codes file split ``r`` reads (``checksum`` when
    already computed, else the file is hashed here)."""
    source = {
        "path": str(r.path.resolve()),
        "split": r.split,
        "checksum": checksum or file_checksum(r.path),
        "method": r.method,
        "origin": codes_origin(r.config),
    }
    run = (r.config.get("encode") or {}).get("run_dir")  # set by fghash encode
    if run:  # the run folder whose network made the codes: fghash search --image uses it
        source["run"] = str(Path(run).resolve()) if Path(run).is_dir() else str(run)
    return source
