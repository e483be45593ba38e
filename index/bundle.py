"""Index bundles: a folder holding a plain FAISS binary index and its item metadata.

Layout of a bundle folder ``PATH``::

    PATH/index.faiss   faiss.write_index_binary of the CPU index (opens with plain
                       faiss.read_index_binary; codes zero-padded to ``dim`` bits)
    PATH/items.h5      ids, labels, paths of the indexed items, in index order
    PATH/index.json    kind, bits, dim, padding, params, ntotal, FAISS version, the
                       codes file it came from (path, split, sha256, method, origin),
                       creation time, and ``index_file``: size, first bytes and SHA-256
                       of index.faiss (checked on load, :mod:`index.checks`)

Saving is atomic: everything is written into a temporary folder beside ``PATH`` and
renamed into place, so an interrupted save never leaves a half bundle under ``PATH``
and a failed save never touches an existing one. The temporary folder's name carries the process id
(:func:`fghash.util.atomic.temp_prefix`); one left by a killed process is removed by the next
save beside it.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fghash.codes import IdsChecker, SplitReader, file_checksum, nbytes_for, open_split
from fghash.errors import FghashError, os_error_from_message
from fghash.util.atomic import remove_stale, temp_prefix
from index.binary import BinaryIndex, build_index, default_hash_params, wrap_faiss_index
from index.checks import check_index_file, codes_origin, file_record
from index.items import ItemMeta, ItemsWriter, read_items, write_items

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "INDEX_FILE",
    "ITEMS_FILE",
    "META_FILE",
    "save_index",
    "load_index",
    "read_bundle_meta",
    "is_bundle",
    "build_from_codes",
    "build_bundle",
    "bundle_folder",
    "index_meta",
    "write_meta",
    "milvus_meta",
    "write_index_file",
]

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = "fghash.index"
BUNDLE_VERSION = 1
INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.h5"
META_FILE = "index.json"
# Rows read from a codes file at a time while building (8 MB of 64-bit codes).
_READ_ROWS = 1 << 20


def is_bundle(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder with an ``index.json`` (or the index.faiss inside one)."""
    p = Path(path)
    if p.is_file() and p.name == INDEX_FILE:
        p = p.parent
    return p.is_dir() and (p / META_FILE).is_file()


def _folder(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.is_file() and p.name == INDEX_FILE:
        return p.parent
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
    folder = _folder(path)
    meta_path = folder / META_FILE
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
    return meta


def _write_faiss(index: BinaryIndex, path: Path) -> None:
    """``faiss.write_index_binary``, with FAISS's write failures raised as :class:`OSError`."""
    import faiss

    try:
        faiss.write_index_binary(index.cpu_index(), str(path))
    except RuntimeError as e:  # FAISS reports a full disk as "... write error in ...: 28 (...)"
        err = os_error_from_message(str(e), str(path))
        if err is None:
            raise
        raise err from None


def write_index_file(index: BinaryIndex, folder: Path) -> dict[str, Any]:
    """Write ``folder/index.faiss``; return its record (size, header, SHA-256) for index.json."""
    _write_faiss(index, folder / INDEX_FILE)
    return file_record(folder / INDEX_FILE)


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FghashError(f"{path} already exists; pass --force to replace it.")
        if not is_bundle(path) or path.is_file():
            raise FghashError(
                f"{path} exists and is not an fghash index bundle; refusing to replace it."
            )
    if not path.parent.is_dir():
        raise FghashError(f"cannot write {path}: the folder {path.parent} does not exist.")


@contextmanager
def bundle_folder(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path``.

    An exception (or Ctrl-C) inside the block removes the temporary folder and leaves
    ``path`` as it was. Only an existing *bundle* is ever replaced, and only with
    ``overwrite=True``.
    """
    path = Path(path)
    _check_target(path, overwrite)
    parent = path.parent
    remove_stale(parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=parent))
    old: Path | None = None
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=".old", dir=parent))
            old.rmdir()
            os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            if old is not None:
                os.rename(old, path)
                old = None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def index_meta(
    index: BinaryIndex, source: dict[str, Any] | None, index_file: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``index.json`` of a FAISS bundle holding ``index`` built from ``source``;
    ``index_file`` is :func:`write_index_file`'s record of ``index.faiss``."""
    import faiss

    meta = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "kind": index.kind,
        "bits": index.bits,
        "dim": index.dim,
        "code_bytes": nbytes_for(index.bits),
        "stored_bytes": index.dim // 8,
        "padded": index.padded,
        "params": index.params,
        "ntotal": index.ntotal,
        "built_on": index.device,
        "faiss_version": faiss.__version__,
        "codes": source,
        "files": {"index": INDEX_FILE, "items": ITEMS_FILE},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if index_file is not None:
        meta["index_file"] = index_file
    return meta


def milvus_meta(index: Any, source: dict[str, Any] | None) -> dict[str, Any]:
    """The ``index.json`` of a Milvus bundle: where the collection lives, no local index."""
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "kind": "milvus",
        "bits": index.bits,
        "dim": index.dim,
        "code_bytes": nbytes_for(index.bits),
        "padded": False,
        "params": index.params,
        "ntotal": index.ntotal,
        "built_on": "milvus",
        "codes": source,
        "files": {},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    """Write ``index.json`` into ``folder``."""
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n", "utf-8")


def save_index(
    index: BinaryIndex,
    path: str | os.PathLike[str],
    items: ItemMeta,
    *,
    overwrite: bool = False,
) -> Path:
    """Save ``index`` and ``items`` as a bundle folder at ``path`` (atomically).

    An existing ``path`` raises :class:`FghashError` unless ``overwrite=True``, and even
    then only an existing *bundle* is replaced (never an unrelated file or folder).
    A GPU index is copied to the CPU first. Returns the bundle folder.
    """
    path = Path(path)
    if len(items) != index.ntotal:
        raise FghashError(
            f"item metadata lists {len(items)} items but the index holds {index.ntotal}."
        )
    with bundle_folder(path, overwrite=overwrite) as tmp:
        record = write_index_file(index, tmp)
        write_items(tmp / ITEMS_FILE, items)
        write_meta(tmp, index_meta(index, items.source, record))
    logger.debug("saved %s index (%d items) to %s", index.kind, index.ntotal, path)
    return path


def load_index(
    path: str | os.PathLike[str], *, device: str = "cpu", verify: bool | None = None
) -> tuple[BinaryIndex, ItemMeta]:
    """Load a bundle written by :func:`save_index`: the folder or its ``index.faiss``.

    ``device`` as in :func:`index.gpu.resolve_device`; only flat indexes move to GPU.
    A missing or damaged bundle raises :class:`FghashError`: ``index.faiss`` is checked
    against the size, header and SHA-256 in ``index.json`` (``verify`` as in
    :func:`index.checks.check_index_file`). A Milvus bundle returns
    an :class:`index.milvus.MilvusIndex` and its :class:`index.milvus.MilvusItems`.
    """
    meta = read_bundle_meta(path)
    if meta["kind"] == "milvus":
        from index.milvus import open_milvus

        return open_milvus(meta)  # type: ignore[return-value]
    import faiss

    folder = _folder(path)
    index_path = folder / INDEX_FILE
    if not index_path.is_file():
        raise FghashError(f"{index_path}: no such file; the bundle is incomplete.")
    check_index_file(index_path, meta.get("index_file"), verify=verify)
    try:
        fi = faiss.read_index_binary(str(index_path))
    except RuntimeError:
        raise FghashError(f"{index_path} is not a FAISS binary index (or it is damaged).") from None
    if int(fi.d) != int(meta["dim"]) or int(fi.ntotal) != int(meta["ntotal"]):
        raise FghashError(
            f"{index_path} holds {fi.ntotal} codes of {fi.d} bits but {META_FILE} says "
            f"{meta['ntotal']} of {meta['dim']}; the bundle is inconsistent."
        )
    items = read_items(folder / ITEMS_FILE, source=meta.get("codes"))
    if len(items) != int(fi.ntotal):
        raise FghashError(
            f"{folder / ITEMS_FILE} lists {len(items)} items but the index holds {fi.ntotal}."
        )
    index = wrap_faiss_index(fi, int(meta["bits"]), dict(meta["params"]), device=device)
    if index.kind != meta["kind"]:
        raise FghashError(
            f"{index_path} is a {index.kind} index but {META_FILE} says {meta['kind']}."
        )
    return index, items


def _source(r: SplitReader, checksum: str | None = None) -> dict[str, Any]:
    """``index.json``'s record of the codes file split ``r`` reads."""
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


def _index_from_reader(
    r: SplitReader, kind: str, nlist: int | None, device: str, **build_kw: Any
) -> BinaryIndex:
    """Build an index over a split, adding block by block where the kind allows.

    ``ivf`` trains its k-means on the whole split, so it reads all codes at once; the
    other kinds hold one block of rows beside the index, whatever the split's size.
    """
    if r.n == 0:
        raise FghashError("the database is empty; an index needs at least one item.")
    if kind == "ivf":
        return build_index(r.read("codes"), r.bits, kind, nlist=nlist, device=device, **build_kw)
    if kind in ("hash", "multihash") and build_kw.get("hash_b") is None:
        b, nh = default_hash_params(r.bits, r.n, kind)
        build_kw["hash_b"] = b
        if kind == "multihash" and build_kw.get("nhash") is None:
            build_kw["nhash"] = nh
    blocks = iter(r.blocks(_READ_ROWS))
    s, e = next(blocks)
    index = build_index(r.read("codes", s, e), r.bits, kind, nlist=nlist, device=device, **build_kw)
    index.reserve(r.n)
    for s, e in blocks:
        index.add(r.read("codes", s, e))
    return index


def _copy_items(r: SplitReader, dst: Path) -> None:
    """Write the ids, labels and paths of a split into an ``items.h5``, block by block,
    checking on the way that the ids are unique (:class:`fghash.codes.file.IdsChecker`)."""
    labels = None
    if r.has("labels"):
        lab = r.read("labels", 0, 1)
        labels = ("multi", lab.shape[1]) if lab.ndim == 2 else "single"
    ids_check = IdsChecker(r)
    with ItemsWriter(dst, r.n, labels=labels, paths=r.has("paths")) as w:
        for s, e in r.blocks(_READ_ROWS):
            ids = r.read("ids", s, e)
            ids_check.feed(ids)
            w.write(
                s,
                ids,
                r.read("labels", s, e) if labels else None,
                r.read("paths", s, e) if r.has("paths") else None,
            )
    ids_check.finish()


def build_from_codes(
    codes_path: str | os.PathLike[str],
    *,
    split: str = "database",
    kind: str = "flat",
    nlist: int | None = None,
    device: str = "auto",
    **build_kw: Any,
) -> tuple[BinaryIndex, ItemMeta]:
    """Read one split of a codes file and index it (see :func:`index.binary.build_index`).

    The returned :class:`ItemMeta` records the codes file's absolute path, the split,
    its SHA-256 and (when the codes file names it) the run folder that encoded it as
    ``source``, which :func:`save_index` writes into ``index.json``.
    """
    codes_path = Path(codes_path)
    with open_split(codes_path, split) as r:
        r.validate()
        index = _index_from_reader(r, kind, nlist, device, **build_kw)
        items = ItemMeta(
            ids=r.read("ids"),
            labels=r.read("labels") if r.has("labels") else None,
            paths=r.read("paths") if r.has("paths") else None,
            source=_source(r),
        )
    return index, items


def build_bundle(
    codes_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    split: str = "database",
    kind: str = "flat",
    nlist: int | None = None,
    device: str = "auto",
    overwrite: bool = False,
    **build_kw: Any,
) -> tuple[BinaryIndex, Path]:
    """``fghash build-index``: index one split of a codes file and save it as a bundle.

    Refuses an existing ``out`` (without ``overwrite``) before doing any work. Reads
    the codes file block by block: besides the index itself, memory holds one block of
    rows (all codes for ``ivf``, whose k-means trains on them). Returns the index (its
    ``device`` says where it was built) and the bundle folder.
    """

    out = Path(out)
    codes_path = Path(codes_path)
    _check_target(out, overwrite)
    with (
        open_split(codes_path, split) as r,
        bundle_folder(out, overwrite=overwrite) as tmp,
        ThreadPoolExecutor(2) as pool,
    ):
        # Beside the index build, worker threads hash the codes file and copy the items
        # (checking ids unique); file reads, hashlib, h5py I/O and FAISS's add release
        # the GIL. The pool is left (threads joined) before the folder is renamed.
        checksum = pool.submit(file_checksum, codes_path)
        copied = pool.submit(_copy_items, r, tmp / ITEMS_FILE)
        r.check_padding()
        index = _index_from_reader(r, kind, nlist, device, **build_kw)
        _write_faiss(index, tmp / INDEX_FILE)
        record = pool.submit(file_record, tmp / INDEX_FILE)
        copied.result()
        source = _source(r, checksum.result())
        write_meta(tmp, index_meta(index, source, record.result()))
    logger.debug("saved %s index (%d items) to %s", index.kind, index.ntotal, out)
    return index, out
