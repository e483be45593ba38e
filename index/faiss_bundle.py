"""The FAISS back end of index bundles: ``index.faiss`` + ``items.h5`` + ``index.json``.

``index.faiss`` is ``faiss.write_index_binary`` of the CPU index, so it opens with plain
``faiss.read_index_binary``; codes are zero-padded to ``dim`` bits. ``items.h5`` holds
the items' ids, labels and paths in index order (:mod:`index.items`). The folder format
and its atomic replacement are :mod:`index.folder`'s; :mod:`index.bundle` chooses this
back end for every ``kind`` but ``milvus``.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from fghash.codes import IdsChecker, Split, SplitReader, file_checksum, open_split
from fghash.errors import FghashError, os_error_from_message
from index.binary import BinaryIndex, build_index, default_hash_params, wrap_faiss_index
from index.checks import check_index_file, file_record
from index.folder import (
    INDEX_FILE,
    ITEMS_FILE,
    META_FILE,
    base_meta,
    bundle_folder,
    check_target,
    codes_source,
    now_iso,
    write_meta,
)
from index.items import (
    ItemMeta,
    ItemsWriter,
    labels_form,
    read_items,
    split_labels_form,
    write_items,
)
from index.rerank import floats_of_codes

__all__ = [
    "save_index",
    "open_faiss_bundle",
    "build_from_codes",
    "build_faiss_bundle",
    "index_meta",
    "write_index_file",
    "append_faiss_items",
]

logger = logging.getLogger(__name__)

# Rows read from a codes file at a time while building (8 MB of 64-bit codes).
_READ_ROWS = 1 << 20


def _fs_name(path: Path) -> str | None:
    """``path`` as FAISS's C++ takes it, or None for a name that is not UTF-8 (which SWIG
    refuses; such files are read and written through a Python file object)."""
    name = str(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return name


def _read_faiss(path: Path) -> Any:
    import faiss

    name = _fs_name(path)
    if name is not None:
        return faiss.read_index_binary(name)
    with open(path, "rb") as f:
        return faiss.read_index_binary(faiss.PyCallbackIOReader(f.read))


def _write_faiss(index: BinaryIndex, path: Path) -> None:
    """``faiss.write_index_binary``, with FAISS's write failures raised as :class:`OSError`."""
    import faiss

    try:
        name = _fs_name(path)
        if name is not None:
            faiss.write_index_binary(index.cpu_index(), name)
        else:
            with open(path, "wb") as f:
                faiss.write_index_binary(index.cpu_index(), faiss.PyCallbackIOWriter(f.write))
    except RuntimeError as e:  # FAISS reports a full disk as "... write error in ...: 28 (...)"
        err = os_error_from_message(str(e), str(path))
        if err is None:
            raise
        raise err from None


def write_index_file(index: BinaryIndex, folder: Path) -> dict[str, Any]:
    """Write ``folder/index.faiss``; return its record (size, header, SHA-256) for index.json."""
    _write_faiss(index, folder / INDEX_FILE)
    return file_record(folder / INDEX_FILE)


def index_meta(
    index: BinaryIndex, source: dict[str, Any] | None, index_file: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``index.json`` of a FAISS bundle holding ``index`` built from ``source``;
    ``index_file`` is :func:`write_index_file`'s record of ``index.faiss``."""
    import faiss

    meta = base_meta(
        index.kind,
        index.bits,
        index.dim,
        stored_bytes=index.dim // 8,
        padded=index.padded,
        params=index.params,
        ntotal=index.ntotal,
        built_on=index.device,
        faiss_version=faiss.__version__,
        codes=source,
        files={"index": INDEX_FILE, "items": ITEMS_FILE},
    )
    if index_file is not None:
        meta["index_file"] = index_file
    return meta


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


def open_faiss_bundle(
    folder: Path, meta: dict[str, Any], *, device: str = "cpu", verify: bool | None = None
) -> tuple[BinaryIndex, ItemMeta]:
    """Open the FAISS bundle in ``folder`` whose validated ``index.json`` is ``meta``.

    ``index.faiss`` is checked against the size, header and SHA-256 recorded in
    ``meta`` (``verify`` as in :func:`index.checks.check_index_file`), then against
    ``meta``'s dimension, count and kind; ``items.h5`` must list as many items.
    """

    index_path = folder / INDEX_FILE
    if not index_path.is_file():
        raise FghashError(f"{index_path}: no such file; the bundle is incomplete.")
    check_index_file(index_path, meta.get("index_file"), verify=verify)
    try:
        fi = _read_faiss(index_path)
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
    checking on the way that the ids are unique (:class:`fghash.codes.blocks.IdsChecker`)."""
    labels = split_labels_form(r)
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
            source={**codes_source(r), "floats": floats_of_codes(codes_path, split)},
        )
    return index, items


def build_faiss_bundle(
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
    """Index one split of a codes file with FAISS and save it as a bundle at ``out``.

    Refuses an existing ``out`` (without ``overwrite``) before doing any work. Reads
    the codes file block by block: besides the index itself, memory holds one block of
    rows (all codes for ``ivf``, whose k-means trains on them). Returns the index (its
    ``device`` says where it was built) and the bundle folder.
    """
    out = Path(out)
    codes_path = Path(codes_path)
    check_target(out, overwrite)
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
        source = codes_source(r, checksum.result())
        source["floats"] = floats_of_codes(codes_path, split)  # what --rerank may use
        write_meta(tmp, index_meta(index, source, record.result()))
    logger.debug("saved %s index (%d items) to %s", index.kind, index.ntotal, out)
    return index, out


def _write_items_plus(dst: Path, old: ItemMeta, new: Split) -> None:
    """Write ``old``'s items followed by ``new``'s into a fresh ``items.h5``."""
    n_old = len(old)
    with ItemsWriter(
        dst, n_old + len(new), labels=labels_form(new.labels), paths=new.paths is not None
    ) as w:
        for s in range(0, n_old, _READ_ROWS):
            e = min(n_old, s + _READ_ROWS)
            w.write(
                s,
                np.asarray(old.ids[s:e]),
                None if old.labels is None else np.asarray(old.labels[s:e]),
                None if old.paths is None else list(old.paths[s:e]),
            )
        w.write(n_old, new.ids, new.labels, new.paths)


def append_faiss_items(
    tmp: Path,
    index: BinaryIndex,
    items: ItemMeta,
    new: Split,
    source: dict[str, Any],
    meta: dict[str, Any],
) -> None:
    """Add ``new``'s codes to ``index`` and write the grown bundle into the new folder
    ``tmp``; its ``index.json`` keeps ``created``, records ``updated`` and counts one
    ``generation`` more than ``meta``, the current one."""
    index.add(new.codes)
    record = write_index_file(index, tmp)
    _write_items_plus(tmp / ITEMS_FILE, items, new)
    out = index_meta(index, source, record)
    out["created"] = meta.get("created") or out["created"]
    out["updated"] = now_iso()
    out["generation"] = int(meta.get("generation", 1)) + 1
    write_meta(tmp, out)
