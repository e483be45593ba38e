"""Exact Hamming distances between packed codes, and their per-distance histograms.

A ``b``-bit code is stored little-endian in ``⌈b/8⌉`` bytes. Padded with zero bytes to
whole 64-bit words ``w`` (and with the unused high bits of its last byte cleared), the
distance is a sum of word popcounts,

.. math::

    d(u, x) = \\sum_{w} \\operatorname{popcount}(u_w \\oplus x_w),

which counts exactly the ``b`` code bits. FAISS's ``hammings`` kernel does the XOR and
popcount (int32 out) and ``ivec_hist`` counts a row of distances into ``b + 1`` bins;
both release the GIL, so blocks of queries can run in parallel threads. FAISS is
imported when first used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "padded_codes",
    "hamming_block",
    "pair_distances",
    "histogram",
    "row_histograms",
    "default_workers",
]

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _faiss() -> Any:
    import faiss

    return faiss


def padded_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Packed codes ``uint8 [N, ⌈b/8⌉]`` as ``uint8 [N, 8⌈b/64⌉]``, C-contiguous: zero bytes
    appended and the bits above ``b`` in the last code byte cleared (the input when it
    already has that form)."""
    c = np.asarray(codes)
    nbytes = c.shape[1]
    width = -(-nbytes // 8) * 8
    tail = int(bits) % 8
    if width == nbytes and tail == 0 and c.flags.c_contiguous:
        return c
    out = np.zeros((c.shape[0], width), dtype=np.uint8)
    out[:, :nbytes] = c
    if tail:
        out[:, nbytes - 1] &= (1 << tail) - 1
    return out


def hamming_block(qp: np.ndarray, dbp: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """All distances ``int32 [len(qp), len(dbp)]`` between padded codes (:func:`padded_codes`).

    ``out``: a C-contiguous int32 buffer of at least that many items, reused when given.
    """
    m, n = qp.shape[0], dbp.shape[0]
    if out is None:
        d = np.empty((m, n), dtype=np.int32)
    else:
        d = out.reshape(-1)[: m * n].reshape(m, n)
    if m and n:
        f = _faiss()
        f.hammings(f.swig_ptr(qp), f.swig_ptr(dbp), m, n, qp.shape[1], f.swig_ptr(d))
    return d


def histogram(values: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[v] = #{i : values[i] = v}`` for every bin ``v`` of ``out`` (a C-contiguous int32
    row, overwritten); ``values`` a C-contiguous int32 row, entries outside the bins ignored."""
    if values.size == 0:
        out[:] = 0
        return out
    f = _faiss()
    f.ivec_hist(values.size, f.swig_ptr(values), out.size, f.swig_ptr(out))
    return out


def row_histograms(values: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[i, v] = #{j : values[i, j] = v}`` for every row ``i`` and bin ``v`` of ``out``.

    ``values``: C-contiguous int32 ``[m, n]``; ``out``: C-contiguous int32 ``[m, bins]``,
    overwritten; entries outside the bins are ignored. One FAISS call per row, with the
    row addresses computed here rather than through numpy views.
    """
    m, n = values.shape
    if n == 0:
        out[:m] = 0
        return out
    f = _faiss()
    hist, ptr, bins = f.ivec_hist, f.cast_integer_to_int_ptr, out.shape[1]
    src, dst = values.ctypes.data, out.ctypes.data
    for i in range(m):
        hist(n, ptr(src + 4 * n * i), bins, ptr(dst + 4 * bins * i))
    return out


def default_workers() -> int:
    """Threads for distance blocks: the cores this process may use, at most FAISS's (and so
    ``OMP_NUM_THREADS``') thread count."""
    from fghash.util.threads import usable_cores

    return max(1, min(usable_cores(), _faiss().omp_get_max_threads()))


def pair_distances(qcodes: np.ndarray, dbcodes: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Hamming distance between query ``i`` and database row ``ids[i, j]``, ``int32 [nq, k]``.

    XOR and a popcount table on the packed bytes. Entries with ``ids < 0`` (a search that
    returned fewer than ``k`` results) get ``bits + 1``-like sentinel ``8 * nbytes + 1``,
    larger than any real distance.
    """
    ids = np.asarray(ids)
    valid = ids >= 0
    rows = dbcodes[np.where(valid, ids, 0)]  # [nq, k, nbytes]
    x = np.bitwise_xor(rows, qcodes[:, None, :])
    d = _POPCOUNT[x].sum(axis=2, dtype=np.int32)
    d[~valid] = 8 * qcodes.shape[1] + 1
    return d
