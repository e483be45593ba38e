"""Open, build and check index bundles, whichever back end holds them.

The one place that chooses the back end: opening and checking follow the ``kind``
recorded in ``index.json`` (``milvus`` → :mod:`index.milvus`, every FAISS kind →
:mod:`index.faiss_bundle`), building follows ``backend``. The folder format both back
ends share is :mod:`index.folder`'s; neither back end imports this module. pymilvus is
imported only when a Milvus bundle is opened or built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fghash.codes import Split
from fghash.errors import FghashError
from fghash.util.locks import writer_lock
from index.checks import check_index_file
from index.faiss_bundle import append_faiss_items, build_faiss_bundle, open_faiss_bundle
from index.folder import INDEX_FILE, bundle_path, read_bundle_meta
from index.snapshot import read_snapshot, tidy

__all__ = ["BACKENDS", "load_bundle", "load_index", "build_bundle", "check_bundle", "store_added"]

BACKENDS = ("faiss", "milvus")


def load_bundle(
    path: str | os.PathLike[str], *, device: str = "cpu", verify: bool | None = None
) -> tuple[dict[str, Any], Any, Any]:
    """Open a bundle as one consistent version: ``(index.json, index, items)``.

    As :func:`load_index`, read through :func:`index.snapshot.read_snapshot`, so a
    writer switching the bundle meanwhile makes the read start again instead of mixing
    two versions or calling the bundle damaged; a dead writer's unfinished change is
    finished first (:func:`index.snapshot.tidy`).
    """
    p = Path(path)
    folder = p.parent if p.name == INDEX_FILE else p
    tidy(folder)
    folder = bundle_path(path)

    def read(f: Path) -> tuple[dict[str, Any], Any, Any]:
        meta = read_bundle_meta(f)
        if meta["kind"] == "milvus":
            from index.milvus import open_milvus

            return (meta, *open_milvus(meta))
        return (meta, *open_faiss_bundle(f, meta, device=device, verify=verify))

    return read_snapshot(folder, read)


def load_index(
    path: str | os.PathLike[str], *, device: str = "cpu", verify: bool | None = None
) -> tuple[Any, Any]:
    """Open a bundle: the folder or its ``index.faiss``.

    A FAISS bundle returns a :class:`index.binary.BinaryIndex` and its
    :class:`index.items.ItemMeta` (``device`` as in :func:`index.gpu.resolve_faiss_device`;
    only flat indexes move to GPU; ``verify`` as in :func:`index.checks.check_index_file`).
    A Milvus bundle returns an :class:`index.milvus.MilvusIndex` and its
    :class:`index.milvus.MilvusItems`. A missing or damaged bundle raises
    :class:`FghashError`. Readers see one version of the bundle (:func:`load_bundle`).
    """
    _, index, items = load_bundle(path, device=device, verify=verify)
    return index, items


def build_bundle(
    codes_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    backend: str = "faiss",
    split: str = "database",
    kind: str = "flat",
    nlist: int | None = None,
    device: str = "auto",
    overwrite: bool = False,
    uri: str | None = None,
    collection: str | None = None,
    milvus_index: str = "BIN_FLAT",
    wait: float | None = 0,
    **build_kw: Any,
) -> tuple[Any, Path]:
    """``fghash build-index``: index one split of a codes file and save it as a bundle.

    ``backend="faiss"``: :func:`index.faiss_bundle.build_faiss_bundle` (``kind``,
    ``nlist``, ``device`` and ``build_kw`` as :func:`index.binary.build_index` takes
    them). ``backend="milvus"``: :func:`index.milvus.build_milvus_bundle` into the
    collection ``collection`` at ``uri`` with vector index ``milvus_index`` (``nlist``
    for BIN_IVF_FLAT). Returns the index and the bundle folder.

    The build holds ``out``'s writer lock (:func:`fghash.util.locks.writer_lock`, waiting
    up to ``wait`` seconds), and the back ends' "exists / no ``overwrite``" check runs
    inside it: of two builds to one ``out`` without ``overwrite``, one writes the bundle
    and the other is told it exists; ``overwrite`` replaces, it never ignores a writer.
    """
    if backend not in BACKENDS:
        raise FghashError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if not uri and backend == "milvus":
        raise FghashError("--backend milvus needs --uri (a PATH.db file or http://host:19530).")
    if not Path(codes_path).exists():  # before the lock: a refused build leaves no lock file
        raise FghashError(f"{codes_path}: no such file.")
    with writer_lock(out, wait=wait, what=f"the index {out}"):
        return _build_locked(
            codes_path,
            out,
            backend=backend,
            split=split,
            kind=kind,
            nlist=nlist,
            device=device,
            overwrite=overwrite,
            uri=uri,
            collection=collection,
            milvus_index=milvus_index,
            **build_kw,
        )


def _build_locked(
    codes_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    backend: str,
    split: str,
    kind: str,
    nlist: int | None,
    device: str,
    overwrite: bool,
    uri: str | None,
    collection: str | None,
    milvus_index: str,
    **build_kw: Any,
) -> tuple[Any, Path]:
    """:func:`build_bundle` once ``out``'s writer lock is held."""
    if backend == "faiss":
        return build_faiss_bundle(
            codes_path,
            out,
            split=split,
            kind=kind,
            nlist=nlist,
            device=device,
            overwrite=overwrite,
            **build_kw,
        )
    from index.milvus import build_milvus_bundle

    assert uri is not None
    return build_milvus_bundle(
        codes_path,
        out,
        uri=uri,
        collection=collection,
        split=split,
        index_type=milvus_index,
        nlist=nlist,
        overwrite=overwrite,
    )


def check_bundle(
    path: str | os.PathLike[str], *, verify: bool = False
) -> tuple[dict[str, Any], str, list[str]]:
    """Check that a bundle opens: ``(index.json, what was checked, problems)``.

    A FAISS bundle's ``index.faiss`` is compared with its record (size and header; the
    SHA-256 too for small files and with ``verify``), then opened with its items; a
    Milvus bundle asks the server for its collection (nothing local to check: ``"-"``).
    ``problems`` holds one sentence per failure; a missing bundle or an unreadable
    ``index.json`` raises :class:`FghashError`.
    """
    tidy(path)
    try:
        return read_snapshot(bundle_path(path), lambda f: _check_folder(f, verify))
    except _Problems as e:  # the bundle's own, not a writer's switch: reported, not raised
        return e.meta, e.checked, e.problems


class _Problems(FghashError):
    """:func:`check_bundle`'s findings, raised so that a check which failed because a
    writer switched the bundle is repeated like any other read."""

    def __init__(self, meta: dict[str, Any], checked: str, problems: list[str]) -> None:
        super().__init__(problems[0])
        self.meta, self.checked, self.problems = meta, checked, problems


def _check_folder(folder: Path, verify: bool) -> tuple[dict[str, Any], str, list[str]]:
    meta = read_bundle_meta(folder)
    checked = "-"
    problems: list[str] = []
    try:
        if meta["kind"] != "milvus":
            index_path = folder / INDEX_FILE
            if not index_path.is_file():
                raise FghashError(f"{index_path}: no such file; the bundle is incomplete.")
            checked = check_index_file(
                index_path, meta.get("index_file"), verify=True if verify else None
            )
            open_faiss_bundle(folder, meta, device="cpu", verify=False)  # header, counts, items
        else:
            from index.milvus import open_milvus

            open_milvus(meta)
    except FghashError as e:
        problems.append(str(e))
    if problems:
        raise _Problems(meta, checked, problems)
    return meta, checked, problems


def store_added(
    tmp: Path, index: Any, items: Any, new: Split, source: dict[str, Any], meta: dict[str, Any]
) -> None:
    """Add ``new`` to the open ``index`` (with ``items``) of the bundle whose ``index.json``
    is ``meta`` and write the grown bundle into the new folder ``tmp`` (for
    :func:`index.snapshot.commit`), recording ``source`` as its codes file."""
    if meta["kind"] == "milvus":
        from index.milvus import append_milvus_items

        append_milvus_items(tmp, index, new, source, meta)
    else:
        append_faiss_items(tmp, index, items, new, source, meta)
