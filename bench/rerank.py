"""Rows for Hamming search then float re-ranking (:mod:`index.rerank`), beside the binary
and exact float rows of :mod:`bench.throughput`.

One row per (float metric, oversampling factor ``X``): exact binary search (FAISS
``IndexBinaryFlat``, the padded raw index, as the binary ``flat`` row) for the ``k·X``
Hamming nearest, then :func:`index.rerank.rerank` over the in-memory float vectors (as
the exact float rows search them in memory; scored in place), ``k`` returned. Timed like every row
(:func:`bench.throughput.timed_search`: batch QPS, median of runs, single-query
latencies); ``accuracy`` holds ``map@k``/``precision@k`` of the re-ranked list (mAP@all
is not defined: only ``k`` items are returned).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np

from bench.throughput import accuracy, timed_search
from fghash.errors import FghashError
from index.rerank import MAX_OVERSAMPLE, rerank

__all__ = ["DEFAULT_OVERSAMPLE", "check_oversample", "measure_rerank"]

#: Oversampling factors ``X`` ``fghash bench`` reports when the codes file has features.
DEFAULT_OVERSAMPLE = (2, 4, 10)


def check_oversample(oversample: Sequence[int]) -> None:
    """Refuse factors that are not integers from 1 to :data:`index.rerank.MAX_OVERSAMPLE`
    (an empty list is allowed: no re-ranked rows)."""
    bad = [
        x
        for x in oversample
        if isinstance(x, bool)
        or not isinstance(x, int | np.integer)
        or not 1 <= x <= MAX_OVERSAMPLE
    ]
    if bad:
        raise FghashError(
            f"--oversample takes integers from 1 to {MAX_OVERSAMPLE} such as 2,4,10, "
            f"got {', '.join(map(str, bad))}."
        )


def _candidate_index(
    xb: np.ndarray, xq: np.ndarray, bits: int, kind: str, nlist: int | None, nprobe: int | None
) -> tuple[Any, np.ndarray, float, dict[str, Any]]:
    """The FAISS index giving the candidates, the padded queries, its build seconds and
    the row's params for it (empty for flat: the rows ``fghash bench`` always had)."""
    from index import build_index, pad_codes

    t0 = time.perf_counter()
    index = build_index(xb, bits, kind, nlist=nlist, device="cpu")
    build_s = time.perf_counter() - t0
    fi, q = index.faiss_index, pad_codes(xq, bits, index.dim)
    if kind == "flat":
        if hasattr(fi, "use_heap"):
            # FAISS's counting selection: the same neighbours in the same order as its
            # heap, faster for the k·X candidates (tests/test_rerank.py checks)
            fi.use_heap = False
        return fi, q, build_s, {}
    if nprobe is not None:
        fi.nprobe = min(int(nprobe), int(fi.nlist))
    return fi, q, build_s, {"candidates": kind, "nlist": int(fi.nlist), "nprobe": int(fi.nprobe)}


def measure_rerank(
    xb: np.ndarray,
    xq: np.ndarray,
    bits: int,
    fb: np.ndarray,
    fq: np.ndarray,
    ks: Sequence[int],
    *,
    oversample: Sequence[int] = DEFAULT_OVERSAMPLE,
    metrics: Sequence[str] = ("ip", "l2"),
    floats_kind: str = "unknown",
    qlabels: np.ndarray | None = None,
    dblabels: np.ndarray | None = None,
    phase: Callable[[str], AbstractContextManager[Any]] | None = None,
    candidates: str = "flat",
    nlist: int | None = None,
    nprobe: int | None = None,
    **timing_kw: Any,
) -> list[dict[str, Any]]:
    """Re-ranked rows for packed codes ``xb``/``xq`` and float vectors ``fb``/``fq``.

    ``candidates="ivf"`` takes the ``k·X`` candidates from a binary IVF index of
    ``nlist`` lists visiting ``nprobe`` (FAISS defaults of :func:`index.build_index`
    when None) instead of the exact flat index: a search that does not scan them all."""
    phase = phase or (lambda name: nullcontext())
    fb = np.ascontiguousarray(fb, dtype=np.float32)
    fq = np.ascontiguousarray(fq, dtype=np.float32)
    n_db = xb.shape[0]
    k_search = min(max(ks), n_db)
    rows: list[dict[str, Any]] = []
    with phase("rerank"):
        fi, q, build_s, made = _candidate_index(xb, xq, bits, candidates, nlist, nprobe)
        for metric in metrics:
            for x in oversample:
                m = min(k_search * int(x), n_db)

                def search(rows: np.ndarray, k: int, m: int = m, metric: str = metric) -> Any:
                    # ``rows``: query numbers, so the single-query latency calls (slices
                    # of them) know their float vectors too
                    D, I = fi.search(q[rows], m)
                    D, I, _ = rerank(D, I, fq[rows], fb, k, metric)
                    return D, I

                timing, ids = timed_search(search, np.arange(len(q)), k_search, **timing_kw)
                rows.append(
                    {
                        "backend": "rerank",
                        "kind": f"rerank-{metric}",
                        "device": "cpu",
                        "params": {
                            "metric": metric,
                            "oversample": int(x),
                            "floats": floats_kind,
                            **made,
                        },
                        "sweep": {"oversample": int(x)},
                        "build_s": build_s,
                        "index_bytes": int(xb.nbytes + fb.nbytes),
                        "bytes_per_item": (xb.nbytes + fb.nbytes) / n_db,
                        **timing,
                        "accuracy": accuracy(ids, ks, n_db, qlabels=qlabels, dblabels=dblabels),
                    }
                )
    return rows
