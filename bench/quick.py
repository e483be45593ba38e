"""A few headline figures of one codes file: the summary ``fghash demo`` prints.

:func:`quick_report` ranks the ``query`` split against the ``database`` split and gives

* mAP@all of the binary codes by Hamming ranking, tie-aware (expected AP over random
  order within ties, :func:`fghash.eval.metrics.expected_ap`) and stable (ties in database order);
* mAP@all of exact float search, inner product over the file's ``features`` (for codes
  files written by ``fghash encode`` the relaxed codes ``tanh(v)``), when it has them;
* the chance level: the expected mAP@all of a random ranking, i.e. every item tied
  (``expected_ap`` with one distance bin per query);
* queries per second of FAISS ``IndexBinaryFlat`` (codes zero-padded to the fast width,
  as :mod:`index` stores them) and ``IndexFlatIP`` over the features: whole query set
  in one batch, one warm-up, median of ``runs``, same thread count, CPU
  (:mod:`bench.throughput`).

For the full picture (every index type, @k metrics, plots) use ``fghash bench``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bench.evaluate import evaluate_codes, load_for_bench
from bench.throughput import measure_binary, measure_float
from fghash.errors import FghashError
from fghash.eval.metrics import expected_ap

__all__ = ["QuickReport", "chance_map", "quick_report"]


@dataclass
class QuickReport:
    """Headline quality and speed of one codes file (see the module docstring)."""

    path: str
    bits: int
    method: str
    n_query: int
    n_database: int
    map_hamming: float  # tie-aware mAP@all of the binary codes
    map_hamming_stable: float  # the same, ties in database order
    chance: float  # expected mAP@all of a random ranking
    map_float: float | None  # mAP@all of exact inner-product search over the features
    features: dict[str, Any] | None  # {"dim", "kind"} of the features, or None
    index_bits: int  # bits per code as FAISS stores them (zero-padded)
    k: int  # neighbours per query in the speed test
    qps_binary: float  # IndexBinaryFlat, queries per second
    qps_float: float | None  # IndexFlatIP over the features, queries per second
    threads: int  # FAISS threads used for both
    runs: int  # timed runs (median reported)

    @property
    def speedup(self) -> float | None:
        """How many times faster the binary search answers the same queries."""
        if not self.qps_float:
            return None
        return self.qps_binary / self.qps_float

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": self.speedup}


def chance_map(n_relevant: np.ndarray, n_database: int) -> float:
    """Expected mAP@all of a uniformly random ranking (all ``n_database`` items tied)."""
    r = np.asarray(n_relevant, dtype=np.int64)[:, None]
    n = np.full_like(r, int(n_database))
    return float(np.mean(expected_ap(n, r)))


def quick_report(
    codes_path: str | os.PathLike[str],
    *,
    k: int = 10,
    runs: int = 20,
    threads: int | None = None,
    progress: bool | None = None,
) -> QuickReport:
    """Quality (tie-aware and stable mAP@all, float baseline, chance) and CPU speed of a
    codes file with labelled ``query`` and ``database`` splits."""
    import faiss

    from index import fast_dim

    cf = load_for_bench(codes_path)
    ev = evaluate_codes(cf, (k,), float_metrics=("ip",), progress=progress)
    if ev.labels is None:
        raise FghashError(
            f"{codes_path} has no labels in its query and database splits; mAP needs labels."
        )
    q, db = cf["query"], cf["database"]
    stats = ev.hamming
    assert stats is not None and stats.n_relevant is not None
    if threads is not None:
        faiss.omp_set_num_threads(int(threads))
    kk = min(int(k), len(db))
    common = dict(runs=runs, warmup=1, latency_queries=0, max_seconds=10.0)
    (brow,) = measure_binary(
        db.codes,
        q.codes,
        cf.bits,
        ["flat"],
        [kk],
        exact_counts=stats.n,
        progress=False,
        **common,
    )
    qps_float = None
    if ev.features is not None:
        (frow,) = measure_float(db.features, q.features, [kk], metrics=("ip",), **common)
        qps_float = float(frow["qps"])
    float_q = ev.quality.get("float-ip")
    return QuickReport(
        path=str(codes_path),
        bits=cf.bits,
        method=cf.method,
        n_query=len(q),
        n_database=len(db),
        map_hamming=ev.quality["hamming"]["tie-aware"]["map@all"],
        map_hamming_stable=ev.quality["hamming"]["stable"]["map@all"],
        chance=chance_map(stats.n_relevant, len(db)),
        map_float=None if float_q is None else float_q["stable"]["map@all"],
        features=ev.features,
        index_bits=fast_dim(cf.bits),
        k=kk,
        qps_binary=float(brow["qps"]),
        qps_float=qps_float,
        threads=int(faiss.omp_get_max_threads()),
        runs=runs,
    )
