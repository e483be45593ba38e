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
from index.radius import check_max_results, check_radius
from index.rerank import DEFAULT_OVERSAMPLE, check_rerank_query, search_reranked
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
    rerank: str | None = None,
    oversample: int = DEFAULT_OVERSAMPLE,
    rerank_metric: str = "ip",
    fq: np.ndarray | None = None,
    radius: int | None = None,
    max_results: int | None = None,
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
    searches flat and ivf bundles (ivf: :mod:`index.tensor_ivf`, FAISS CPU's results;
    ``auto`` uses it for an ivf bundle with ``device="gpu"``).

    ``rerank`` (``relaxed`` or ``features``): take the ``k·oversample`` Hamming nearest
    and return the ``k`` best by float score (``rerank_metric`` ``ip`` or ``l2``), each
    result with its ``score``; the query vectors are ``fq`` (with ``xq``) or the codes
    file's (see :mod:`index.rerank`).

    ``radius``: search by Hamming radius instead (:mod:`index.radius`): every item at
    distance ``<= radius``, sorted by distance with ties by position, at most
    ``max_results`` per query (default 1000), each query's dict marked ``"truncated"``;
    ``k`` is then not used (pass None). FAISS answers it on the CPU; ``--device gpu``
    (``auto`` engine) or ``engine="tensor"`` uses the tensor engine on a flat bundle.
    """
    if sum(q is not None for q in (codes, code, xq)) != 1:
        raise FghashError(
            "give the queries either as a codes file (--codes CODES.h5), as one hex code "
            "(--code HEX) or as images (--image): one of them, not both and not none."
        )
    if radius is not None:
        radius, max_results = _radius_args(radius, max_results, rerank)
    elif isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise FghashError(f"k must be a positive integer, got {k!r}.")
    elif max_results is not None:
        raise FghashError("--max-results goes with --radius (a radius search).")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise FghashError(f"limit must be a positive integer, got {limit!r}.")
    meta = read_bundle_meta(bundle)
    if radius is None and k > int(meta["ntotal"]):  # type: ignore[operator]
        raise FghashError(
            f"k={k} is larger than the database of {bundle} ({meta['ntotal']} items); "
            f"use -k {meta['ntotal']} or less."
        )
    _check_nflip(nflip, meta, bundle)
    if rerank is not None:
        check_rerank_query(rerank, oversample, rerank_metric, code)
    bits = int(meta["bits"])
    queries: Queries = None
    if xq is not None:
        xq, queries = _packed_queries(xq, query_paths, bits, bundle)
    elif code is not None:
        xq = hex_to_code(code, bits)
    else:
        xq, queries = _codes_file_queries(codes, split, limit, meta, bundle)  # type: ignore[arg-type]
    if radius is not None:
        loaded, index, items = _open_for_radius(bundle, engine, device, meta, verify)
    else:
        m = k if rerank is None else min(k * oversample, int(meta["ntotal"]))  # type: ignore[operator]
        loaded, index, items = _open_for_search(bundle, engine, device, m, verify, meta.get("kind"))
    if any(loaded.get(key) != meta.get(key) for key in ("kind", "bits", "params")):
        # replaced by another index between the first look and the read: start again
        return search_bundle(
            bundle, k, codes=codes, split=split, limit=limit, code=code, nprobe=nprobe,
            ef_search=ef_search, nflip=nflip, device=device, verify=verify,
            xq=xq if code is None and codes is None else None,
            query_paths=query_paths, engine=engine, rerank=rerank, oversample=oversample,
            rerank_metric=rerank_metric, fq=fq, radius=radius, max_results=max_results,
        )  # fmt: skip
    if rerank is not None:
        return search_reranked(
            bundle, loaded, index, items, xq, k, rerank=rerank, oversample=oversample,
            metric=rerank_metric, fq=fq, codes=codes, split=split, queries=queries,
            verify=verify, nprobe=nprobe, ef_search=ef_search, nflip=nflip,
        )  # fmt: skip
    kw: dict[str, Any] = {} if radius is None else {"radius": radius, "max_results": max_results}
    return search_items(
        index, items, xq, k or 0, queries=queries, nprobe=nprobe, ef_search=ef_search,
        nflip=nflip, **kw,
    )  # fmt: skip


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
    bundle: Any, engine: str, device: str, k: int, verify: bool | None, kind: Any = None
) -> tuple[dict[str, Any], Any, Any]:
    """One version of the bundle (:func:`index.bundle.load_bundle`): its ``index.json``,
    its index on the engine and device :func:`index.tensor.pick_engine` picks for its
    ``kind`` (an ivf bundle on the GPU: :mod:`index.tensor_ivf`), its items."""
    engine, device = pick_engine(engine, device, k, kind)
    if engine == "tensor":
        meta, index, items = load_bundle(bundle, device="cpu", verify=verify)
        return meta, tensor_from_binary(index, device=device), items
    if device == "auto" and k > GPU_MAX_K:
        device = "cpu"  # GpuIndexBinaryFlat cannot return more than GPU_MAX_K neighbours
    return load_bundle(bundle, device=device, verify=verify)


def _radius_args(radius: Any, max_results: Any, rerank: Any) -> tuple[int, int]:
    """``radius`` and ``max_results`` checked (:mod:`index.radius`); no re-ranking."""
    if rerank is not None:
        raise FghashError("give --radius or --rerank, not both: re-ranking needs a fixed k.")
    return check_radius(radius), check_max_results(max_results)


def _open_for_radius(
    bundle: Any, engine: str, device: str, meta: dict[str, Any], verify: bool | None
) -> tuple[dict[str, Any], Any, Any]:
    """One version of the bundle for a radius search: the tensor engine when asked for
    (or, with ``engine="auto"``, for a flat bundle on ``--device gpu``: FAISS's GPU index
    has no range search), else the FAISS index on the CPU."""
    if engine not in ("auto", "faiss", "tensor"):
        pick_engine(engine, device, 1)  # its sentence
    if engine == "auto":
        gpu = device in ("gpu", "cuda") and meta.get("kind") == "flat"
        engine = "tensor" if gpu else "faiss"
    if engine == "tensor":
        return _open_for_search(bundle, "tensor", device, 1, verify)
    if device in ("gpu", "cuda"):
        logger.info("radius search: FAISS answers it on the CPU")
    return load_bundle(bundle, device="cpu", verify=verify)
