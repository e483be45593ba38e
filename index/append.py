"""``fghash add``: append new items to an index bundle (and its codes file) without rebuilding.

New codes are added to the existing index as they are: a flat index appends them, an
IVF index files them under its trained centroids (no k-means again), a Milvus
collection inserts them. They take positions ``ntotal ..`` after the current items, and
their ids must not already be in the bundle (one sentence refuses duplicates).

By default the codes file the bundle was built from (``index.json``'s ``codes.path``)
gets the same rows appended to the same split, and ``index.json`` records its new
SHA-256, so bundle and codes file stay in step. Both are written whole beside their
final names and switched in together by :func:`index.snapshot.commit`, whose journal
lets the next command finish the switch if this one is killed half-way.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from fghash.codes import Split, append_codes, ids_unique, read_attrs, read_codes
from fghash.errors import FghashError
from fghash.util.locks import writer_lock
from index.bundle import load_bundle, load_index, store_added
from index.checks import codes_origin
from index.folder import read_bundle_meta
from index.items import ItemMeta, labels_form
from index.rewrite import rewrite
from index.snapshot import recover

__all__ = [
    "add_to_bundle",
    "read_new_items",
    "next_id",
    "codes_features_kind",
    "check_same_model",
]

logger = logging.getLogger(__name__)


def read_new_items(path: str | os.PathLike[str], split: str = "database") -> tuple[int, Split]:
    """Bits and one split (features and attributes included) of a codes file of new items."""
    cf = read_codes(path, splits=[split])
    return cf.bits, cf[split]


def codes_features_kind(bundle: str | os.PathLike[str]) -> str | None:
    """The kind of float features the bundle's codes file stores for its split, if any."""
    source = read_bundle_meta(bundle).get("codes") or {}
    path = source.get("path")
    if not path or not Path(path).is_file():
        return None
    feats = read_attrs(path)["splits"].get(source.get("split", "database"), {}).get("features")
    return feats["kind"] if feats else None


def check_same_model(
    bundle: str | os.PathLike[str],
    *,
    new_codes: str | os.PathLike[str] | None = None,
    run: str | os.PathLike[str] | None = None,
) -> None:
    """Refuse new items whose codes come from another method or run than the bundle's:
    Hamming distances between codes of different models mean nothing. The test is the
    one ``fghash search`` warns on (method, then :func:`index.checks.codes_origin`); for
    encoded images, the run against the run the bundle records. Unknown sides pass."""
    source = read_bundle_meta(bundle).get("codes") or {}
    theirs_run = source.get("run")
    if run is not None:
        mine_run = str(Path(run).resolve())
        if theirs_run and mine_run != theirs_run:
            raise FghashError(
                f"the run {run} did not make the codes in {bundle} (the run {theirs_run} did); "
                "codes of different runs are not comparable, so pass --allow-mixed to add "
                "them anyway."
            )
        return
    if new_codes is None:
        return
    head = read_attrs(new_codes)
    known = {None, "", "unknown"}
    method, theirs_method = head["method"], source.get("method")
    if method not in known and theirs_method not in known and method != theirs_method:
        raise FghashError(
            f"{new_codes} holds {method} codes but {bundle} holds {theirs_method} codes; "
            "distances between codes of different methods mean nothing, so pass "
            "--allow-mixed to add them anyway."
        )
    mine, theirs = codes_origin(head["config"]), source.get("origin")
    if mine is not None and theirs is not None and mine != theirs:
        raise FghashError(
            f"{new_codes} comes from another {method} run than the codes in {bundle}; codes "
            "of different runs are not comparable, so pass --allow-mixed to add them anyway."
        )


def _check_compatible(meta: dict[str, Any], items: Any, bits: int, new: Split, where: str) -> None:
    if bits != int(meta["bits"]):
        raise FghashError(
            f"the new items have {bits}-bit codes but {where} holds {meta['bits']}-bit codes; "
            f"encode them with the same model."
        )
    old_form = items.labels_form()
    new_form = labels_form(new.labels)
    widths_differ = isinstance(old_form, tuple) and old_form != new_form
    if not _same_form(old_form, new_form) or widths_differ:
        raise FghashError(
            f"{where} has {_form_words(old_form)} but the new items have {_form_words(new_form)}; "
            f"both must carry labels of the same form."
        )
    old_paths = items.has_paths()
    if old_paths != (new.paths is not None):
        raise FghashError(
            f"{where} {'has' if old_paths else 'has no'} item paths but the new items "
            f"{'have none' if old_paths else 'do'}; both must carry paths or neither."
        )


def _form_words(form: Any) -> str:
    if form is None:
        return "no labels"
    if form == "single":
        return "single labels"
    return (
        f"multi-hot labels of {form[1]} classes" if isinstance(form, tuple) else "multi-hot labels"
    )


def _same_form(a: Any, b: Any) -> bool:
    return (a[0] if isinstance(a, tuple) else a) == (b[0] if isinstance(b, tuple) else b)


def _check_unique(items: Any, new: Split, where: str) -> None:
    new_ids = np.asarray(new.ids, dtype=np.int64)
    if not ids_unique(new_ids):
        srt = np.sort(new_ids)
        dup = int(srt[1:][srt[1:] == srt[:-1]][0])
        raise FghashError(f"the new items repeat id {dup}; ids must be unique.")
    dup = items.present_id(new_ids) if len(new_ids) else None
    if dup is not None:
        raise FghashError(f"id {dup} is already in {where}; ids must stay unique.")


def next_id(bundle: str | os.PathLike[str]) -> int:
    """One more than the largest id in a FAISS bundle (where new items' ids start)."""
    _, items = load_index(bundle, device="cpu")
    if not isinstance(items, ItemMeta):
        raise FghashError("give --first-id when adding encoded images to a Milvus index.")
    return int(np.max(items.ids)) + 1 if len(items) else 0


def add_to_bundle(
    bundle: str | os.PathLike[str],
    bits: int,
    new: Split,
    *,
    update_codes: bool = True,
    new_source: dict[str, Any] | None = None,
    wait: float | None = 0,
) -> tuple[int, Path | None]:
    """Append the items of ``new`` (``bits``-bit codes) to ``bundle``.

    With ``update_codes`` the bundle's source codes file gets them too (its split named
    in ``index.json``); it must exist and match the checksum recorded there. Returns the
    new number of items and the codes file updated (or None).

    Holds the writer locks of the bundle and then of its codes file (waiting ``wait``
    seconds), finishes a dead writer's change first, and switches codes file and bundle
    together through :func:`index.snapshot.commit`: a kill at any point leaves the
    before or the after state for the next command.
    """
    bundle = Path(bundle)
    with writer_lock(bundle, wait=wait, what=f"the index {bundle}"):
        recover(bundle)
        meta, index, items = load_bundle(bundle, device="cpu")
        where = f"the index {bundle}"
        _check_compatible(meta, items, bits, new, where)
        _check_unique(items, new, where)
        if len(new) == 0:
            return index.ntotal, None
        source = dict(meta.get("codes") or {})
        added = list(source.get("added", []))
        added.append({"n": len(new), **(new_source or {})})
        source["added"] = added
        codes_path = rewrite(
            bundle,
            source,
            index.ntotal,
            update_codes=update_codes,
            wait=wait,
            step="add",
            write_codes=lambda path, out: append_codes(
                path, source.get("split", "database"), new, out=out
            ),
            write_bundle=lambda tmp: store_added(tmp, index, items, new, source, meta),
        )
    logger.info("added %d items to %s (now %d)", len(new), bundle, index.ntotal)
    return index.ntotal, codes_path
