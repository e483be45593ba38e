"""``fghash search``: one call that searches a bundle with codes-file, hex or packed queries."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from fghash.codes import hex_to_code, nbytes_for, read_codes
from fghash.errors import FghashError
from index.bundle import load_bundle
from index.checks import provenance_warning
from index.folder import read_bundle_meta
from index.gpu import GPU_MAX_K
from index.items import ItemMeta, search_items
from index.tensor import pick_engine, tensor_from_binary

__all__ = ["search_bundle"]

logger = logging.getLogger(__name__)

Queries = ItemMeta | list[dict[str, Any]] | None


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
    (hex, byte 0 first, as :func:`fghash.codes.bits.code_to_hex` writes) and ``xq`` (uint8
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
    _check_nflip(nflip, meta, bundle)
    bits = int(meta["bits"])
    queries: Queries = None
    if xq is not None:
        xq, queries = _packed_queries(xq, query_paths, bits, bundle)
    elif code is not None:
        xq = hex_to_code(code, bits)
    else:
        xq, queries = _codes_file_queries(codes, split, limit, meta, bundle)  # type: ignore[arg-type]
    loaded, index, items = _open_for_search(bundle, engine, device, k, verify)
    if any(loaded.get(key) != meta.get(key) for key in ("kind", "bits", "params")):
        # replaced by another index between the first look and the read: start again
        return search_bundle(
            bundle, k, codes=codes, split=split, limit=limit, code=code, nprobe=nprobe,
            ef_search=ef_search, nflip=nflip, device=device, verify=verify,
            xq=xq if code is None and codes is None else None,
            query_paths=query_paths, engine=engine,
        )  # fmt: skip
    return search_items(
        index, items, xq, k, queries=queries, nprobe=nprobe, ef_search=ef_search, nflip=nflip
    )


def _check_nflip(nflip: Any, meta: dict[str, Any], bundle: Any) -> None:
    """Refuse more bit flips than the hash index's ``b`` bits: FAISS would enumerate
    ``sum(C(b, i), i <= nflip)`` buckets, which past ``b`` only grows the work."""
    b = (meta.get("params") or {}).get("hash_b")
    if isinstance(nflip, int) and not isinstance(nflip, bool) and isinstance(b, int) and nflip > b:
        raise FghashError(
            f"--nflip {nflip} is more than the {b} bits {bundle} hashes on (hash_b); "
            f"use --nflip {b} or less."
        )


def _packed_queries(
    xq: np.ndarray, query_paths: Sequence[str] | None, bits: int, bundle: Any
) -> tuple[np.ndarray, Queries]:
    """Packed query codes (e.g. encoded images), checked against the index's width."""
    xq = np.ascontiguousarray(xq, dtype=np.uint8)
    if xq.ndim != 2 or xq.shape[1] != nbytes_for(bits):
        raise FghashError(
            f"the query codes are {list(xq.shape)} bytes but the index {bundle} holds "
            f"{bits}-bit codes; encode the queries with the model that made the index."
        )
    if query_paths is None:
        return xq, None
    return xq, [{"id": None, "label": None, "path": str(p)} for p in query_paths]


def _codes_file_queries(
    codes: str | os.PathLike[str],
    split: str,
    limit: int | None,
    meta: dict[str, Any],
    bundle: Any,
) -> tuple[np.ndarray, ItemMeta]:
    """The first ``limit`` rows of a codes file's split, warning when the file comes from
    another method or run than the index."""
    bits = int(meta["bits"])
    cf = read_codes(codes, splits=[split], features=False, attributes=False)
    if cf.bits != bits:
        raise FghashError(
            f"{codes} holds {cf.bits}-bit codes but the index {bundle} holds {bits}-bit "
            f"codes; search with queries encoded by the same model."
        )
    warning = provenance_warning(meta.get("codes"), codes, cf.method, cf.config, bundle)
    if warning:
        logger.warning("%s", warning)
    s = cf[split]
    n = len(s) if limit is None else min(limit, len(s))
    queries = ItemMeta(
        ids=s.ids[:n],
        labels=None if s.labels is None else s.labels[:n],
        paths=None if s.paths is None else s.paths[:n],
    )
    return s.codes[:n], queries


def _open_for_search(
    bundle: Any, engine: str, device: str, k: int, verify: bool | None
) -> tuple[dict[str, Any], Any, Any]:
    """One version of the bundle (:func:`index.bundle.load_bundle`): its ``index.json``,
    its index on the engine and device :func:`index.tensor.pick_engine` picks, its items."""
    engine, device = pick_engine(engine, device, k)
    if engine == "tensor":
        meta, index, items = load_bundle(bundle, device="cpu", verify=verify)
        return meta, tensor_from_binary(index, device=device), items
    if device == "auto" and k > GPU_MAX_K:
        device = "cpu"  # GpuIndexBinaryFlat cannot return more than GPU_MAX_K neighbours
    return load_bundle(bundle, device=device, verify=verify)
