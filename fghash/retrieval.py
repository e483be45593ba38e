"""A small, obviously correct mAP by Hamming ranking, for validation during training.

The benchmark metrics (tie-aware mAP, precision@k, ...) live in ``bench/``; this module
only gives training a number to watch, with plain NumPy and no FAISS.
"""

from __future__ import annotations

import numpy as np

__all__ = ["hamming_map"]


def hamming_map(
    query_signs: np.ndarray,
    query_labels: np.ndarray,
    db_signs: np.ndarray,
    db_labels: np.ndarray,
    *,
    block: int = 256,
) -> float:
    """mAP@all of ±1 query codes against ±1 database codes, single labels.

    Hamming distance from inner products: ``d_H(q, b) = (k − qᵀb) / 2``. Each query
    ranks the whole database by distance; ties keep database order (a stable sort). The
    average precision of a query is the mean, over the positions ``r`` of its relevant
    items, of the precision at ``r``; a query with no relevant item scores 0 and still
    counts in the mean, as in the ADSH evaluation code.
    """
    q = np.asarray(query_signs, dtype=np.float32)
    b = np.asarray(db_signs, dtype=np.float32)
    ql = np.asarray(query_labels)
    bl = np.asarray(db_labels)
    if len(q) == 0:
        return float("nan")
    k = q.shape[1]
    aps = np.zeros(len(q), dtype=np.float64)
    ranks = np.arange(1, len(b) + 1, dtype=np.float64)
    for start in range(0, len(q), block):
        dist = 0.5 * (k - q[start : start + block] @ b.T)
        for j, row in enumerate(dist):
            order = np.argsort(row, kind="stable")
            rel = bl[order] == ql[start + j]
            if rel.any():
                hits = np.cumsum(rel)[rel]
                aps[start + j] = float(np.mean(hits / ranks[rel]))
    return float(aps.mean())
