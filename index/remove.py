"""``fghash remove``: take items out of an index bundle (and its codes file) by id.

The back ends that can remove: a flat index keeps the remaining codes in their order; an
IVF index keeps its trained centroids and its lists, less the removed entries (nothing
is re-assigned, so the remaining items are found exactly as before); a Milvus collection
deletes the rows. Positions stay dense: the items after a removed one move up, in the
index, in ``items.h5`` and in the codes file alike. HNSW, hash and multihash indexes
cannot remove (FAISS has no removal for them): one sentence says to rebuild.

The codes file and the bundle are rewritten and switched together as ``fghash add``
does (:func:`index.rewrite.rewrite`), so a kill at any point leaves the before or the
after state.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fghash.codes import remove_rows
from fghash.errors import FghashError
from fghash.util.locks import writer_lock
from index.binary import BinaryIndex, ivf_lists
from index.bundle import load_bundle
from index.faiss_bundle import index_meta, write_index_file
from index.folder import ITEMS_FILE, now_iso, write_meta
from index.items import ItemMeta, write_items
from index.rewrite import rewrite
from index.snapshot import recover

__all__ = ["REMOVABLE", "remove_from_bundle", "read_ids_file"]

logger = logging.getLogger(__name__)

REMOVABLE = ("flat", "ivf", "milvus")


def read_ids_file(path: str | os.PathLike[str]) -> list[int]:
    """Ids from a text file: one per line (blank lines and ``#`` comments skipped)."""
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FghashError(f"cannot read ids from {path}: {e.strerror or e}.") from None
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            out.append(int(text))
        except ValueError:
            raise FghashError(f"{path}, line {n}: {text[:40]!r} is not an item id.") from None
    return out


def remove_from_bundle(
    bundle: str | os.PathLike[str],
    ids: Iterable[int],
    *,
    update_codes: bool = True,
    wait: float | None = 0,
) -> tuple[int, int, Path | None]:
    """Remove the items with ``ids`` from ``bundle``: ``(removed, items left, codes file)``.

    Every id must be in the bundle (the missing ones are named); removing every item is
    refused (an index needs one). Holds the bundle's writer lock like ``add``.
    """
    bundle = Path(bundle)
    wanted = np.unique(np.asarray(list(ids), dtype=np.int64))
    if wanted.size == 0:
        raise FghashError("give the ids to remove (--ids or --ids-file).")
    with writer_lock(bundle, wait=wait, what=f"the index {bundle}"):
        recover(bundle)
        meta, index, items = load_bundle(bundle, device="cpu")
        if meta["kind"] not in REMOVABLE:
            raise FghashError(
                f"a {meta['kind']} index cannot remove items (FAISS has no removal for it); "
                f"rebuild it without them with 'fghash build-index' (flat, ivf and milvus "
                f"indexes can remove)."
            )
        positions, ids = _rows(index, items)
        keep = _keep_mask(ids, wanted, bundle)
        source = dict(meta.get("codes") or {})
        source["removed"] = [*source.get("removed", []), {"n": int(wanted.size)}]
        redo = None
        if meta["kind"] == "milvus":
            from index.milvus_remove import redo_call

            redo = redo_call(index, positions[~keep])
        codes_path = rewrite(
            bundle,
            source,
            index.ntotal,
            update_codes=update_codes,
            wait=wait,
            step="remove",
            write_codes=lambda path, out: remove_rows(
                path, source.get("split", "database"), keep, out=out
            ),
            write_bundle=lambda tmp: _write_kept(tmp, index, items, keep, source, meta),
            redo=redo,
        )
    left = int(keep.sum())
    logger.info("removed %d items from %s (now %d)", wanted.size, bundle, left)
    return int(wanted.size), left, codes_path


def _rows(index: Any, items: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, ids)`` of the bundle's items in position order (FAISS: ``items.h5``,
    positions ``0..N-1``; Milvus: the collection's rows, whose positions may have gaps)."""
    if isinstance(items, ItemMeta):
        ids = np.asarray(items.ids)
        return np.arange(ids.size, dtype=np.int64), ids
    from index.milvus_remove import milvus_rows

    return milvus_rows(index)


def _keep_mask(ids: np.ndarray, wanted: np.ndarray, bundle: Path) -> np.ndarray:
    keep = ~np.isin(ids, wanted)
    missing = np.setdiff1d(wanted, ids)
    if missing.size:
        shown = ", ".join(str(int(i)) for i in missing[:5])
        more = f" and {missing.size - 5} more" if missing.size > 5 else ""
        raise FghashError(f"id {shown}{more} is not in the index {bundle}; nothing was removed.")
    if not keep.any():
        raise FghashError(
            f"removing every item would leave {bundle} empty (an index needs one); delete the "
            "bundle instead."
        )
    return keep


def _write_kept(
    tmp: Path,
    index: Any,
    items: Any,
    keep: np.ndarray,
    source: dict[str, Any],
    meta: dict[str, Any],
) -> None:
    if meta["kind"] == "milvus":
        from index.milvus_remove import write_removed_meta

        write_removed_meta(tmp, index, int((~keep).sum()), source, meta)
        return
    kept = BinaryIndex(
        _kept_faiss(index.cpu_index(), keep),
        bits=index.bits,
        dim=index.dim,
        kind=index.kind,
        params=dict(index.params),
    )
    record = write_index_file(kept, tmp)
    kept_pos = np.flatnonzero(keep)
    paths = items.paths
    if paths is not None:
        paths = paths.take(kept_pos) if hasattr(paths, "take") else [paths[i] for i in kept_pos]
    write_items(
        tmp / ITEMS_FILE,
        ItemMeta(
            ids=np.asarray(items.ids)[keep],
            labels=None if items.labels is None else np.asarray(items.labels)[keep],
            paths=paths,
        ),
    )
    out = index_meta(kept, source, record)
    out["created"] = meta.get("created") or out["created"]
    out["updated"] = now_iso()
    out["generation"] = int(meta.get("generation", 1)) + 1
    write_meta(tmp, out)


def _kept_faiss(fi: Any, keep: np.ndarray) -> Any:
    """A copy of the FAISS flat or IVF index ``fi`` holding only the rows ``keep`` marks,
    numbered ``0..`` in their old order."""
    import faiss

    if isinstance(fi, faiss.IndexBinaryFlat):
        codes = faiss.vector_to_array(fi.xb).reshape(fi.ntotal, fi.code_size)
        out = faiss.IndexBinaryFlat(fi.d)
        out.add(np.ascontiguousarray(codes[keep]))
        return out
    out = faiss.clone_binary_index(fi)
    out.make_direct_map(False)  # a lookup table built for reads would be stale
    new_pos = np.cumsum(keep) - 1
    for lst, ids, codes in ivf_lists(fi):
        mask = keep[ids]
        new_ids = np.ascontiguousarray(new_pos[ids[mask]], dtype=np.int64)
        new_codes = np.ascontiguousarray(codes[mask])
        out.invlists.resize(lst, 0)
        if new_ids.size:
            out.invlists.add_entries(
                lst, new_ids.size, faiss.swig_ptr(new_ids), faiss.swig_ptr(new_codes)
            )
    out.ntotal = int(keep.sum())
    return out
