"""One-call entry points for the command line: search a bundle, describe a path."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fghash.codes import hex_to_code, nbytes_for, open_split, read_attrs, read_codes
from fghash.errors import FghashError
from index.bundle import INDEX_FILE, _folder, is_bundle, load_index, read_bundle_meta
from index.checks import check_index_file, provenance_warning
from index.gpu import GPU_MAX_K
from index.items import ItemMeta, search_items
from index.tensor import pick_engine, tensor_from_binary

__all__ = ["search_bundle", "describe", "format_label"]

logger = logging.getLogger(__name__)


def format_label(label: Any) -> str:
    """A result's label for people: ``-`` when absent, multi-hot labels comma-separated."""
    if label is None:
        return "-"
    if isinstance(label, list):
        return ",".join(map(str, label)) or "-"
    return str(label)


def search_bundle(
    bundle: str | os.PathLike[str],
    k: int,
    *,
    codes: str | os.PathLike[str] | None = None,
    split: str = "query",
    limit: int | None = None,
    code: str | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    nflip: int | None = None,
    device: str = "cpu",
    verify: bool | None = None,
    xq: np.ndarray | None = None,
    query_paths: Sequence[str] | None = None,
    engine: str = "auto",
) -> list[dict[str, Any]]:
    """Search the index bundle at ``bundle`` with queries from a codes file, one hex code
    or packed codes ``xq``.

    Exactly one of ``codes`` (a codes file; its ``split``, first ``limit`` rows), ``code``
    (hex, byte 0 first, as :func:`fghash.codes.file.code_to_hex` writes) and ``xq`` (uint8
    ``[nq, ceil(bits/8)]``, e.g. encoded images; ``query_paths`` names them) is given.
    Returns one dict per query as :func:`index.items.search_items` describes; for a hex
    code or ``xq`` the query's id and label are None. ``device="auto"`` stays on the CPU
    when ``k`` exceeds what the GPU index can return (2048). ``verify=True`` checks the
    SHA-256 of ``index.faiss`` whatever its size (see :func:`index.checks.check_index_file`).
    A codes file made by another method or run than the index's gets a warning.
    ``engine`` (``auto``, ``faiss``, ``tensor``) is chosen as
    :func:`index.tensor.pick_engine` says; only the tensor engine imports torch, and it
    searches flat bundles only.
    """
    if sum(q is not None for q in (codes, code, xq)) != 1:
        raise FghashError(
            "give the queries either as a codes file (--codes CODES.h5), as one hex code "
            "(--code HEX) or as images (--image): one of them, not both and not none."
        )
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise FghashError(f"k must be a positive integer, got {k!r}.")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise FghashError(f"limit must be a positive integer, got {limit!r}.")
    meta = read_bundle_meta(bundle)
    if k > int(meta["ntotal"]):
        raise FghashError(
            f"k={k} is larger than the database of {bundle} ({meta['ntotal']} items); "
            f"use -k {meta['ntotal']} or less."
        )
    bits = int(meta["bits"])
    queries: ItemMeta | list[dict[str, Any]] | None = None
    if xq is not None:
        xq = np.ascontiguousarray(xq, dtype=np.uint8)
        if xq.ndim != 2 or xq.shape[1] != nbytes_for(bits):
            raise FghashError(
                f"the query codes are {list(xq.shape)} bytes but the index {bundle} holds "
                f"{bits}-bit codes; encode the queries with the model that made the index."
            )
        if query_paths is not None:
            queries = [{"id": None, "label": None, "path": str(p)} for p in query_paths]
    elif code is not None:
        xq = hex_to_code(code, bits)
    else:
        cf = read_codes(codes, splits=[split], features=False, attributes=False)  # type: ignore[arg-type]
        if cf.bits != bits:
            raise FghashError(
                f"{codes} holds {cf.bits}-bit codes but the index {bundle} holds {bits}-bit "
                f"codes; search with queries encoded by the same model."
            )
        warning = provenance_warning(meta.get("codes"), codes, cf.method, cf.config, bundle)  # type: ignore[arg-type]
        if warning:
            logger.warning("%s", warning)
        s = cf[split]
        n = len(s) if limit is None else min(limit, len(s))
        xq = s.codes[:n]
        queries = ItemMeta(
            ids=s.ids[:n],
            labels=None if s.labels is None else s.labels[:n],
            paths=None if s.paths is None else s.paths[:n],
        )
    engine, device = pick_engine(engine, device, k)
    if engine == "tensor":
        index, items = load_index(bundle, device="cpu", verify=verify)
        index = tensor_from_binary(index, device=device)
    else:
        if device == "auto" and k > GPU_MAX_K:
            device = "cpu"  # GpuIndexBinaryFlat cannot return more than GPU_MAX_K neighbours
        index, items = load_index(bundle, device=device, verify=verify)
    return search_items(
        index, items, xq, k, queries=queries, nprobe=nprobe, ef_search=ef_search, nflip=nflip
    )


def describe(path: str | os.PathLike[str], *, verify: bool = False) -> dict[str, Any]:
    """What a codes file or an index bundle holds, as a JSON-ready dict.

    ``{"type": "codes", ...}`` carries :func:`fghash.codes.file.read_attrs` (bits, method,
    config, created, splits with sizes, labels and features); ``{"type": "index", ...}``
    carries the bundle's ``index.json`` (kind, bits, dim, ntotal, params, source codes
    file and its checksum) and ``checked``: what of ``index.faiss`` was compared with
    its record (size and header; the SHA-256 too for small files and with ``verify``). ``problems`` lists,
    one sentence each, what makes the file or bundle unusable (a damaged
    ``index.faiss``, duplicate ids, anything the full validation of a codes file finds).
    """
    p = Path(path)
    if not p.exists():
        raise FghashError(f"{p}: no such codes file or index bundle.")
    problems: list[str] = []
    if is_bundle(p):
        meta = read_bundle_meta(p)
        if meta["kind"] == "milvus":  # no local index file: ask the server for the collection
            try:
                load_index(p)
            except FghashError as e:
                problems.append(str(e))
            return {"type": "index", "path": str(p), **meta, "checked": "-", "problems": problems}
        index_path = _folder(p) / INDEX_FILE
        checked = "-"
        try:
            if not index_path.is_file():
                raise FghashError(f"{index_path}: no such file; the bundle is incomplete.")
            checked = check_index_file(
                index_path, meta.get("index_file"), verify=True if verify else None
            )
            load_index(p, device="cpu", verify=False)  # header, counts, items.h5
        except FghashError as e:
            problems.append(str(e))
        return {"type": "index", "path": str(p), **meta, "checked": checked, "problems": problems}
    if p.is_dir():
        raise FghashError(f"{p} is a folder but not an fghash index bundle (no index.json).")
    head = read_attrs(p)
    for name in sorted(head["splits"]):  # what build-index checks: unique ids, unused bits 0
        try:
            with open_split(p, name) as r:
                r.validate()
        except FghashError as e:
            problems.append(str(e))
    return {"type": "codes", "path": str(p), **head, "problems": problems}
