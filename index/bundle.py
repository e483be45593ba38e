"""Index bundles: a folder holding a plain FAISS binary index and its item metadata.

Layout of a bundle folder ``PATH``::

    PATH/index.faiss   faiss.write_index_binary of the CPU index (opens with plain
                       faiss.read_index_binary; codes zero-padded to ``dim`` bits)
    PATH/items.h5      ids, labels, paths of the indexed items, in index order
    PATH/index.json    kind, bits, dim, padding, params, ntotal, FAISS version, the
                       codes file it came from (path, split, sha256) and creation time

Saving is atomic: everything is written into a temporary folder beside ``PATH`` and
renamed into place, so an interrupted save never leaves a half bundle under ``PATH``
and a failed save never touches an existing one.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fghash.atomic import remove_stale, temp_prefix
from fghash.codes import file_checksum, nbytes_for, read_codes
from fghash.errors import FghashError, os_error_from_message
from index.binary import BinaryIndex, build_index, wrap_faiss_index
from index.checks import check_index_file, codes_origin, file_record
from index.items import ItemMeta, read_items, write_items

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
]

logger = logging.getLogger(__name__)

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
    import faiss

    path = Path(path)
    if len(items) != index.ntotal:
        raise FghashError(
            f"item metadata lists {len(items)} items but the index holds {index.ntotal}."
        )
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FghashError(f"{path} already exists; pass --force to replace it.")
        if not is_bundle(path) or path.is_file():
            raise FghashError(
                f"{path} exists and is not an fghash index bundle; refusing to replace it."
            )
    parent = path.parent
    if not parent.is_dir():
        raise FghashError(f"cannot write {path}: the folder {parent} does not exist.")
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
        "codes": items.source,
        "files": {"index": INDEX_FILE, "items": ITEMS_FILE},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    remove_stale(parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=parent))
    old: Path | None = None
    try:
        _write_faiss(index, tmp / INDEX_FILE)
        meta["index_file"] = file_record(tmp / INDEX_FILE)
        write_items(tmp / ITEMS_FILE, items)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n", "utf-8")
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
    logger.debug("saved %s index (%d items) to %s", index.kind, index.ntotal, path)
    return path


def load_index(
    path: str | os.PathLike[str], *, device: str = "cpu", verify: bool | None = None
) -> tuple[BinaryIndex, ItemMeta]:
    """Load a bundle written by :func:`save_index`: the folder or its ``index.faiss``.

    ``device`` as in :func:`index.gpu.resolve_device`; only flat indexes move to GPU.
    A missing or damaged bundle raises :class:`FghashError`: ``index.faiss`` is checked
    against the size, header and SHA-256 in ``index.json`` (``verify`` as in
    :func:`index.checks.check_index_file`).
    """
    import faiss

    meta = read_bundle_meta(path)
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
    cf = read_codes(codes_path, splits=[split], features=False, attributes=False)
    s = cf[split]
    index = build_index(s.codes, cf.bits, kind, nlist=nlist, device=device, **build_kw)
    source = {
        "path": str(codes_path.resolve()),
        "split": split,
        "checksum": file_checksum(codes_path),
        "method": cf.method,
        "origin": codes_origin(cf.config),
    }
    run = (cf.config.get("encode") or {}).get("run_dir")  # set by fghash encode
    if run:  # the run folder whose network made the codes: fghash search --image uses it
        source["run"] = str(Path(run).resolve()) if Path(run).is_dir() else str(run)
    return index, ItemMeta.from_split(s, source=source)


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

    Refuses an existing ``out`` (without ``overwrite``) before doing any work. Returns
    the index (its ``device`` says where it was built) and the bundle folder.
    """
    out = Path(out)
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise FghashError(f"{out} already exists; pass --force to replace it.")
    index, items = build_from_codes(
        codes_path, split=split, kind=kind, nlist=nlist, device=device, **build_kw
    )
    return index, save_index(index, out, items, overwrite=overwrite)
