r"""A small mAP by Hamming ranking, for validation during training.

The benchmark metrics (mAP@k, precision@k, PR curves, ...) live in ``bench/``; this
module only gives training a number to watch, with plain NumPy and no FAISS.

Ties matter here: early in training many codes coincide, and breaking ties by database
position on a class-sorted database rewards collapsed codes. So the default is the
*tie-aware* AP, the expectation over a uniformly random order inside every Hamming
distance (McSherry & Najork, ECIR 2008). For a tie group of ``n`` items, ``r`` relevant,
preceded by ``C`` items of which ``R_c`` are relevant, the expected sum of the precisions
at its relevant items is

.. math::

    \frac{r}{n}\Big[(R_c + 1) S + \frac{r-1}{n-1}\big(n - (C+1) S\big)\Big],
    \qquad S = H_{C+n} - H_C,

(the second term 0 when ``n = 1``), and ``E[AP] = (1/R) Σ_groups`` of it. The derivation
is in :mod:`bench.metrics`, which computes the same quantity for the benchmarks.
"""

from __future__ import annotations

import numpy as np

from fghash.errors import FghashError

__all__ = ["hamming_map"]


def _tie_aware_ap(dist: np.ndarray, rel: np.ndarray, bits: int, harm: np.ndarray) -> float:
    n = np.bincount(dist, minlength=bits + 1).astype(np.float64)
    r = np.bincount(dist[rel], minlength=bits + 1).astype(np.float64)
    big_r = r.sum()
    if big_r == 0:
        return 0.0
    c = (np.cumsum(n) - n).astype(np.int64)
    rc = np.cumsum(r) - r
    s = harm[c + n.astype(np.int64)] - harm[c]
    with np.errstate(divide="ignore", invalid="ignore"):
        pair = np.where(n > 1, (r - 1) / (n - 1), 0.0) * (n - (c + 1) * s)
        group = np.where(n > 0, r / n * ((rc + 1) * s + pair), 0.0)
    return float(group.sum() / big_r)


def hamming_map(
    query_signs: np.ndarray,
    query_labels: np.ndarray,
    db_signs: np.ndarray,
    db_labels: np.ndarray,
    *,
    ties: str = "tie-aware",
    block: int = 256,
) -> float:
    """mAP@all of ±1 query codes against ±1 database codes, single labels.

    Hamming distance from inner products: ``d_H(q, b) = (k − qᵀb) / 2``. Each query
    ranks the whole database by distance; ``ties="tie-aware"`` takes the expected AP
    over random orders within each distance (module docstring), ``ties="stable"`` keeps
    database order. The AP of a query is the mean, over the positions ``r`` of its
    relevant items, of the precision at ``r``; a query with no relevant item scores 0
    and still counts in the mean, as in the ADSH evaluation code.
    """
    if ties not in ("tie-aware", "stable"):
        raise FghashError(f"ties must be 'tie-aware' or 'stable', got {ties!r}.")
    q = np.asarray(query_signs, dtype=np.float32)
    b = np.asarray(db_signs, dtype=np.float32)
    ql = np.asarray(query_labels)
    bl = np.asarray(db_labels)
    if len(q) == 0:
        return float("nan")
    k = q.shape[1]
    aps = np.zeros(len(q), dtype=np.float64)
    ranks = np.arange(1, len(b) + 1, dtype=np.float64)
    harm = np.concatenate([[0.0], np.cumsum(1.0 / ranks)])
    for start in range(0, len(q), block):
        dist = np.rint(0.5 * (k - q[start : start + block] @ b.T)).astype(np.int64)
        for j, row in enumerate(dist):
            rel = bl == ql[start + j]
            if not rel.any():
                continue
            if ties == "tie-aware":
                aps[start + j] = _tie_aware_ap(row, rel, k, harm)
            else:
                order = np.argsort(row, kind="stable")
                hits = np.cumsum(rel[order])[rel[order]]
                aps[start + j] = float(np.mean(hits / ranks[rel[order]]))
    return float(aps.mean())
