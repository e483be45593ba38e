"""Brute-force Hamming k-NN and a tie-aware result checker, independent of ``index/``.

Distances come from a byte-wise popcount table over ``xq ⊕ xb`` (no bit unpacking, no
FAISS), so they do not share code or assumptions with what they check.
"""

from __future__ import annotations

import numpy as np

__all__ = ["POPCOUNT8", "hamming_matrix", "brute_force_knn", "check_knn", "check_valid"]

POPCOUNT8 = np.array([bin(v).count("1") for v in range(256)], dtype=np.int32)


def hamming_matrix(xq: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """int32 ``[nq, N]`` Hamming distances between packed uint8 codes."""
    xq = np.asarray(xq, dtype=np.uint8)
    xb = np.asarray(xb, dtype=np.uint8)
    return POPCOUNT8[xq[:, None, :] ^ xb[None, :, :]].sum(axis=2, dtype=np.int32)


def brute_force_knn(xq: np.ndarray, xb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN, ties broken by ascending database position (stable sort)."""
    dist = hamming_matrix(xq, xb)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, axis=1), order


def check_knn(D: np.ndarray, I: np.ndarray, dist: np.ndarray, k: int) -> None:
    """Assert ``(D, I)`` is *an* exact k-NN result for the distance matrix ``dist``.

    Tie-aware (as FAISS's ``check_ref_knn_with_draws``): per row the distances equal
    the k smallest reference distances; every item strictly closer than the k-th
    distance is returned; the returned items are distinct and each sits at the
    distance reported for it, so the ones at the k-th distance are all at that distance.
    """
    nq, n = dist.shape
    assert D.shape == (nq, k) and I.shape == (nq, k)
    ref = np.sort(dist, axis=1)[:, :k]
    np.testing.assert_array_equal(D, ref)
    for q in range(nq):
        ids = I[q]
        assert ((ids >= 0) & (ids < n)).all(), f"row {q}: ids out of range {ids}"
        assert len(set(ids.tolist())) == k, f"row {q}: repeated ids"
        np.testing.assert_array_equal(dist[q, ids], D[q], err_msg=f"row {q}: wrong distances")
        kth = D[q, -1]
        closer = set(np.flatnonzero(dist[q] < kth).tolist())
        got_closer = {int(i) for i, d in zip(ids, D[q], strict=True) if d < kth}
        assert got_closer == closer, f"row {q}: items below the k-th distance differ"


def check_valid(D: np.ndarray, I: np.ndarray, dist: np.ndarray, missing: int) -> None:
    """Assert an approximate result is self-consistent: sorted, distinct, true distances.

    Slots with ``I == -1`` must come last and carry ``missing`` as distance.
    """
    nq, n = dist.shape
    for q in range(nq):
        found = I[q] >= 0
        m = int(found.sum())
        assert found[:m].all() and not found[m:].any(), f"row {q}: -1 slots not at the end"
        assert (D[q, m:] == missing).all()
        ids, ds = I[q, :m], D[q, :m]
        assert (ids < n).all() and len(set(ids.tolist())) == m
        np.testing.assert_array_equal(dist[q, ids], ds)
        assert (np.diff(ds) >= 0).all(), f"row {q}: distances not sorted"
