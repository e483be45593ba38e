"""One-call entry points for the command line: search a bundle, describe a path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fghash.codes import hex_to_code, read_attrs, read_codes
from fghash.errors import FghashError
from index.bundle import is_bundle, load_index, read_bundle_meta
from index.gpu import GPU_MAX_K
from index.items import ItemMeta, search_items
from index.tensor import pick_engine, tensor_from_binary

__all__ = ["search_bundle", "describe"]


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
    engine: str = "auto",
) -> list[dict[str, Any]]:
    """Search the index bundle at ``bundle`` with queries from a codes file or one hex code.

    Exactly one of ``codes`` (a codes file; its ``split``, first ``limit`` rows) and
    ``code`` (hex, byte 0 first, as :func:`fghash.codes.code_to_hex` writes) is given.
    Returns one dict per query as :func:`index.items.search_items` describes; for a hex
    code the query's id, label and path are None. ``device="auto"`` stays on the CPU
    when ``k`` exceeds what the GPU index can return (2048). ``engine`` (``auto``,
    ``faiss``, ``tensor``) is chosen as :func:`index.tensor.pick_engine` says; only the
    tensor engine imports torch, and it searches flat bundles only.
    """
    if (codes is None) == (code is None):
        raise FghashError(
            "give the queries either as a codes file (--codes CODES.h5) or as one hex code "
            "(--code HEX), not both and not neither."
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
    queries: ItemMeta | None = None
    if code is not None:
        xq = hex_to_code(code, bits)
    else:
        cf = read_codes(codes, splits=[split], features=False, attributes=False)  # type: ignore[arg-type]
        if cf.bits != bits:
            raise FghashError(
                f"{codes} holds {cf.bits}-bit codes but the index {bundle} holds {bits}-bit "
                f"codes; search with queries encoded by the same model."
            )
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
        index, items = load_index(bundle, device="cpu")
        index = tensor_from_binary(index, device=device)
    else:
        if device == "auto" and k > GPU_MAX_K:
            device = "cpu"  # GpuIndexBinaryFlat cannot return more than GPU_MAX_K neighbours
        index, items = load_index(bundle, device=device)
    return search_items(
        index, items, xq, k, queries=queries, nprobe=nprobe, ef_search=ef_search, nflip=nflip
    )


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a codes file or an index bundle holds, as a JSON-ready dict.

    ``{"type": "codes", ...}`` carries :func:`fghash.codes.read_attrs` (bits, method,
    config, created, splits with sizes, labels and features); ``{"type": "index", ...}``
    carries the bundle's ``index.json`` (kind, bits, dim, ntotal, params, source codes
    file and its checksum).
    """
    p = Path(path)
    if not p.exists():
        raise FghashError(f"{p}: no such codes file or index bundle.")
    if is_bundle(p):
        return {"type": "index", "path": str(p), **read_bundle_meta(p)}
    if p.is_dir():
        raise FghashError(f"{p} is a folder but not an fghash index bundle (no index.json).")
    return {"type": "codes", "path": str(p), **read_attrs(p)}
