"""Search and grow index bundles: ``fghash search`` and ``fghash add`` as library calls.

torch is imported only when images are given (to encode them with a trained run).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fghash.errors import FghashError

__all__ = ["Added", "Removed", "Searched", "add_items", "remove_items", "search"]

PathLike = str | os.PathLike[str]


@dataclass
class Searched:
    """What :func:`search` found: one ``{"query", "results"}`` dict per query, and the grid."""

    results: list[dict[str, Any]]
    grid: Path | None = None  # the PNG written for ``grid``
    missing: int = 0  # images the grid could not read (grey squares)


def search(
    index_path: PathLike,
    k: int,
    *,
    images: Sequence[PathLike] = (),
    run: PathLike | None = None,
    grid: PathLike | None = None,
    data_root: PathLike | None = None,
    device: str = "auto",
    force: bool = False,
    **search_kw: Any,
) -> Searched:
    """Search the bundle at ``index_path`` with ``images`` (encoded by ``run``, else by the
    run the bundle records), or with the queries ``search_kw`` names
    (:func:`index.search_bundle`'s ``codes``/``split``/``limit``/``code``, parameters).

    ``grid``: with images, a PNG of each query beside its results (result paths relative
    to ``data_root``, else to the run's). ``device`` is ``auto|cpu|gpu``, for FAISS and
    for the network that encodes the images. An existing ``grid`` file is replaced only
    with ``force`` (checked before any image is encoded, so a refusal costs nothing).
    """
    from index import search_bundle

    if (grid or run or data_root) and not images:
        raise FghashError("--run, --grid and --data-root go with --image.")
    if images and (search_kw.get("codes") is not None or search_kw.get("code") is not None):
        raise FghashError(
            "give the queries as images or as --codes/--code, not both (an argument after the "
            "index is a query image)."
        )
    if not images:
        return Searched(search_bundle(index_path, k, device=device, **search_kw))
    if grid is not None and Path(grid).exists() and not force:
        raise FghashError(f"--grid {grid} already exists; add --force to replace it.")
    from fghash.encoding.image_query import encode_query_images, query_run
    from index import read_bundle_meta

    meta = read_bundle_meta(index_path)
    run_dir = query_run(run, meta, index_path)
    if grid is not None and not Path(grid).parent.is_dir():
        raise FghashError(f"--grid {grid}: the folder {Path(grid).parent} does not exist.")
    torch_device = {"gpu": "cuda"}.get(device, device)
    rerank = search_kw.get("rerank")
    xq = encode_query_images(images, run_dir, int(meta["bits"]), torch_device, floats=rerank)
    if rerank is not None:
        xq, search_kw["fq"] = xq  # the codes and, for --rerank, the images' float vectors
    paths = [str(p) for p in images]
    results = search_bundle(index_path, k, device=device, xq=xq, query_paths=paths, **search_kw)
    if grid is None:
        return Searched(results)
    from fghash.viz.search_grid import write_search_grid

    path, missing = write_search_grid(results, grid, run_dir, data_root)
    return Searched(results, path, missing)


@dataclass
class Added:
    """What :func:`add_items` did."""

    added: int  # items appended
    total: int  # items in the bundle now
    codes_file: Path | None  # the codes file that got them too, if any


def add_items(
    index_path: PathLike,
    new_codes: PathLike | None = None,
    *,
    split: str = "database",
    run: PathLike | None = None,
    images: Sequence[PathLike] = (),
    label: int | None = None,
    first_id: int | None = None,
    batch_size: int = 64,
    device: str = "auto",
    update_codes: bool = True,
    allow_mixed: bool = False,
    wait: float | None = 0,
) -> Added:
    """Append new items to a bundle: the ``split`` of a codes file ``new_codes``, or
    ``images`` (files or folders) encoded with the trained ``run``.

    Image items get ids from ``first_id`` on (default: the largest id + 1) and ``label``;
    with ``update_codes`` the bundle's codes file gets them too, with the float features
    it already stores (:func:`index.append.add_to_bundle`). Codes of another method or
    run than the bundle's are refused unless ``allow_mixed``
    (:func:`index.append.check_same_model`).

    The whole read-modify-write holds the bundle's writer lock
    (:func:`fghash.util.locks.writer_lock`, waiting up to ``wait`` seconds, ``None`` for
    ever), and every read of the bundle's state (model check, next id, items, codes file)
    happens once it is held, so concurrent adds serialise and all of them land. The lock
    on the bundle also covers its codes file: every writer of that file goes through it.
    """
    from fghash.util.locks import writer_lock
    from index.folder import bundle_path

    if (new_codes is None) == (not images):
        raise FghashError("give the new items either as NEW.h5 or as --run RUN --images PATH.")
    target = bundle_path(index_path)
    with writer_lock(target, wait=wait, what=f"the index {target}"):
        return _add_locked(
            target,
            new_codes,
            split=split,
            run=run,
            images=images,
            label=label,
            first_id=first_id,
            batch_size=batch_size,
            device=device,
            update_codes=update_codes,
            allow_mixed=allow_mixed,
        )


def _add_locked(
    index_path: Path,
    new_codes: PathLike | None,
    *,
    split: str,
    run: PathLike | None,
    images: Sequence[PathLike],
    label: int | None,
    first_id: int | None,
    batch_size: int,
    device: str,
    update_codes: bool,
    allow_mixed: bool,
) -> Added:
    """:func:`add_items` once the bundle's writer lock is held."""
    from fghash.ops.new_items import encode_new_items
    from index.append import (
        add_to_bundle,
        check_same_model,
        codes_features_kind,
        next_id,
        read_new_items,
    )

    if not allow_mixed:
        check_same_model(index_path, new_codes=new_codes, run=run if images else None)
    if images:
        if run is None:
            raise FghashError("--images needs --run RUN, the trained run that encodes them.")
        bits, new = encode_new_items(
            run,
            list(images),
            first_id=next_id(index_path) if first_id is None else first_id,
            label=label,
            features=codes_features_kind(index_path) if update_codes else None,
            batch_size=batch_size,
            device=device,
        )
        origin: dict[str, Any] = {"run": str(Path(run).resolve()), "images": len(new)}
    else:
        assert new_codes is not None
        bits, new = read_new_items(new_codes, split)
        origin = {"path": str(Path(new_codes).resolve()), "split": split}
    total, updated = add_to_bundle(
        index_path, bits, new, update_codes=update_codes, new_source=origin
    )
    return Added(len(new), total, updated)


@dataclass
class Removed:
    """What :func:`remove_items` did."""

    removed: int  # items taken out
    total: int  # items left in the bundle
    codes_file: Path | None  # the codes file they left too, if any


def remove_items(
    index_path: PathLike,
    ids: Sequence[int] = (),
    *,
    ids_file: PathLike | None = None,
    update_codes: bool = True,
    wait: float | None = 0,
) -> Removed:
    """Remove the items with ``ids`` (and those listed in ``ids_file``, one per line)
    from a flat, IVF or Milvus bundle and, with ``update_codes``, from its codes file
    (:func:`index.remove.remove_from_bundle`: every id must be there; the change holds
    the bundle's writer lock and is switched in as ``add``'s is)."""
    from index.folder import bundle_path
    from index.remove import read_ids_file, remove_from_bundle

    wanted = [*ids, *(read_ids_file(ids_file) if ids_file is not None else [])]
    removed, left, codes = remove_from_bundle(
        bundle_path(index_path), wanted, update_codes=update_codes, wait=wait
    )
    return Removed(removed, left, codes)
