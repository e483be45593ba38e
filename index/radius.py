r"""Hamming-radius search: every database item within distance ``R`` of a query.

Semantics (every back end): an item is returned when ``d_H(q, x) <= R`` — FAISS's own
``range_search`` keeps ``d < radius`` (strict), so the back ends ask it for ``R + 1``.
Each query's results are sorted by distance, ties by ascending database position (the
order of ``fghash search``'s k-NN on a flat index), and cut at ``max_results``; a query
that had more is marked *truncated*.

Results travel as FAISS's range-search layout: ``(lims, D, I, truncated)`` with query
``i``'s hits at ``D[lims[i]:lims[i+1]]`` (int32 distances) and ``I[...]`` (int64
positions), and ``truncated`` a bool per query.

How each back end answers (the ``range_search`` method of each index class):

* exact engines (FAISS ``flat`` on CPU, the tensor engine): k-NN with
  ``k = max_results + 1``, keeping ``d <= R``. k-NN already orders ties by position and
  cuts ties in position order, so this is the sorted, truncated answer exactly, in
  memory bounded by ``k`` per query (never by how many items are within ``R``);
* ``ivf``, ``hash``, ``multihash``: FAISS ``range_search`` (``nprobe`` / ``nflip``
  honoured: the answer is exact within the lists or buckets visited), sorted here;
* Milvus: its binary range search (``radius = R + 1``, ``range_filter = 0``, metric
  HAMMING) with ``limit = max_results + 1`` (at most 16,384); on ``BIN_IVF_FLAT`` its
  k-NN with that limit instead (its range search there misses items);
* ``hnsw``: refused (FAISS's ``IndexBinaryHNSW`` has no range search).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fghash.errors import FghashError

__all__ = [
    "DEFAULT_MAX_RESULTS",
    "MAX_RESULTS",
    "Ranges",
    "check_max_results",
    "check_radius",
    "from_knn",
    "from_ranges",
    "range_rows",
]

#: Results per query when ``max_results`` is not given.
DEFAULT_MAX_RESULTS = 1000
#: Largest ``max_results``: far above any useful value, low enough to stop a typo.
MAX_RESULTS = 2**24
# Neighbour slots one k-NN call may allocate (D and I: 12 bytes each): 384 MiB.
_KNN_SLOTS = 1 << 25

Ranges = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def check_radius(radius: Any) -> int:
    """``radius`` as an int ``>= 0``, or one sentence."""
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise FghashError(f"radius must be an integer >= 0 (a Hamming distance), got {radius!r}.")
    return int(radius)


def check_max_results(max_results: Any) -> int:
    """``max_results`` as an int in ``1..MAX_RESULTS`` (None: :data:`DEFAULT_MAX_RESULTS`)."""
    if max_results is None:
        return DEFAULT_MAX_RESULTS
    m = max_results
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= MAX_RESULTS:
        raise FghashError(
            f"max_results must be an integer from 1 to {MAX_RESULTS}, got {max_results!r}."
        )
    return int(m)


def _empty(nq: int) -> Ranges:
    return (
        np.zeros(nq + 1, dtype=np.int64),
        np.empty(0, dtype=np.int32),
        np.empty(0, dtype=np.int64),
        np.zeros(nq, dtype=bool),
    )


def from_knn(
    knn: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    xq: np.ndarray,
    radius: int,
    max_results: int,
    ntotal: int,
) -> Ranges:
    """Radius search through an exact k-NN ``knn(xq, k) -> (D, I)`` whose rows are sorted
    by distance, ties by position: ``k = max_results + 1`` (at most ``ntotal``), hits
    ``d <= radius`` kept. Queries go in blocks so that one call holds at most
    ``2**25`` neighbour slots."""
    nq = xq.shape[0]
    if nq == 0:
        return _empty(nq)
    k = min(max_results + 1, ntotal)
    block = max(1, _KNN_SLOTS // k)
    counts, Ds, Is = [], [], []
    truncated = np.zeros(nq, dtype=bool)
    for s in range(0, nq, block):
        D, I = knn(xq[s : s + block], k)
        keep = (D <= radius) & (I >= 0)
        n = keep.sum(axis=1)
        truncated[s : s + len(n)] = n > max_results
        keep[:, max_results:] = False  # rows are sorted: the first max_results hits stay
        counts.append(np.minimum(n, max_results))
        Ds.append(D[keep].astype(np.int32))
        Is.append(I[keep].astype(np.int64))
    lims = np.zeros(nq + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts), out=lims[1:])
    return lims, np.concatenate(Ds), np.concatenate(Is), truncated


def from_ranges(
    lims: np.ndarray, D: np.ndarray, I: np.ndarray, radius: int, max_results: int
) -> Ranges:
    """Sort range-search hits per query by (distance, position), keep ``d <= radius``
    (and positions ``>= 0``) and cut each query at ``max_results``."""
    lims = np.asarray(lims, dtype=np.int64)
    D = np.asarray(D).astype(np.int64)
    I = np.asarray(I, dtype=np.int64)
    nq = len(lims) - 1
    q = np.repeat(np.arange(nq, dtype=np.int64), np.diff(lims))
    ok = (D <= radius) & (I >= 0)
    q, D, I = q[ok], D[ok], I[ok]
    order = np.lexsort((I, D, q))
    q, D, I = q[order], D[order], I[order]
    n = np.bincount(q, minlength=nq)
    first = np.concatenate([[0], np.cumsum(n)[:-1]]) if nq else np.zeros(0, dtype=np.int64)
    rank = np.arange(q.size) - first[q]
    keep = rank < max_results
    out = np.zeros(nq + 1, dtype=np.int64)
    np.cumsum(np.minimum(n, max_results), out=out[1:])
    return out, D[keep].astype(np.int32), I[keep], n > max_results


def range_rows(ranges: Ranges, items: Any) -> list[tuple[list[dict[str, Any]], bool]]:
    """Per query, its records ``{"rank", "id", "distance", "label", "path"}`` (rank from 1)
    and whether it was truncated; ``items`` maps positions to records
    (:class:`index.items.ItemMeta` or a Milvus bundle's items)."""
    lims, D, I, truncated = ranges
    recs = items.records(I) if I.size else []
    out = []
    for i in range(len(lims) - 1):
        a, b = int(lims[i]), int(lims[i + 1])
        rows = [
            {"rank": r, "id": rec["id"], "distance": int(d), "label": rec["label"],
             "path": rec["path"]}
            for r, (d, rec) in enumerate(zip(D[a:b], recs[a:b], strict=True), start=1)
        ]  # fmt: skip
        out.append((rows, bool(truncated[i])))
    return out
