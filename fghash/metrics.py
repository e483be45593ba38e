r"""Retrieval metrics for binary codes (and the exact float baseline), tie-aware.

Protocol (ADSH, A²-Net): the query split is ranked against the database split by
Hamming distance; an item is relevant when it has the query's label (multi-hot labels:
when it shares at least one label). All metrics are means over *all* queries.

**Definitions.** For a ranking ``rel_1, rel_2, …`` (1 = relevant) of ``N`` items and a
query with ``R`` relevant items:

* ``AP@k = (1 / X_k) Σ_{i ≤ k} rel_i · P@i`` with ``P@i = (Σ_{j ≤ i} rel_j) / i`` and
  ``X_k = Σ_{i ≤ k} rel_i`` the relevant items retrieved (DPSH/ADSH ``CalcTopMap``);
  ``AP@all = AP@N`` divides by ``R``. ``AP = 0`` when nothing relevant is retrieved, and
  in particular for a query with no relevant item at all: such a query counts as 0 in
  the mean (ADSH ``calc_map`` skips it but still divides by the number of queries).
  :func:`summarize` reports how many such queries there are.
* ``precision@k = X_k / min(k, N)``; ``recall@k = X_k / R`` (0 when ``R = 0``).
* Hamming radius ``t``: the items with distance ``≤ t`` are retrieved. Precision is
  ``relevant retrieved / retrieved``, counted as 0 when nothing is retrieved (the KSH
  convention for "precision within Hamming radius 2"); recall is
  ``relevant retrieved / R``. These do not depend on the order within ties.
* k-NN recall against the exact binary result (ann-benchmarks): a returned item counts
  when its true distance is at most the exact ``k``-th smallest distance; the score is
  the count over ``min(k, N)``. Ties at the ``k``-th distance cannot cost recall.

**Ties.** A ``b``-bit code has ``b + 1`` distances, so ranks within a distance are
arbitrary and change AP. Two orders are reported:

* ``stable``: ties broken by ascending database position (``np.argsort(d,
  kind="stable")``), what FAISS's flat CPU index returns.
* ``tie-aware``: the expectation over a uniformly random order inside every distance,
  computed exactly from per-distance counts (McSherry & Najork, ECIR 2008, computing
  IR measures in the presence of tied scores).

**Closed form of the tie-aware AP@all.** Take a tie group (all items at one distance)
of ``n`` items, ``r`` of them relevant, preceded by ``C`` items of which ``R_c`` are
relevant. A relevant item of the group lands at group slot ``j`` (1..n) with probability
``1/n``; given its slot, the other ``r - 1`` relevant items fill the other ``n - 1``
slots uniformly, so the expected number of them before it is ``(j-1)(r-1)/(n-1)``. Its
precision ``(R_c + 1 + #relevant before it in the group) / (C + j)`` has a fixed
denominator given ``j``, so its expectation is linear and

.. math::

    E\Big[\sum_{\text{rel. } i \in g} P@i\Big]
      = \frac{r}{n} \sum_{j=1}^{n} \frac{R_c + 1 + (j-1)\frac{r-1}{n-1}}{C + j}
      = \frac{r}{n}\Big[(R_c + 1) S + \frac{r-1}{n-1}\big(n - (C+1) S\big)\Big],

with ``S = Σ_{j=1}^{n} 1/(C+j) = H_{C+n} - H_C`` (harmonic numbers) and the second
term 0 when ``n = 1``; it used ``Σ_j (j-1)/(C+j) = n - (C+1) S``. Groups are
independent and ``R`` is fixed, so ``E[AP@all] = (1/R) Σ_groups`` of this.

**Tie-aware AP@k.** The cut at ``k`` falls inside one group (``n, r, C, R_c`` as above,
``m = k - C`` of its items retrieved). The number ``h`` of its relevant items among the
``m`` retrieved is hypergeometric, ``P(h) = C(r, h) C(n-r, m-h) / C(n, m)``, and given
``h`` they sit uniformly in ``m`` slots, so their expected precision sum is the formula
above with ``n, r`` replaced by ``m, h``. The groups before the cut are independent of
``h`` and the denominator ``X_k = R_c + h`` is fixed given ``h``, hence
``E[AP@k] = Σ_h P(h) (A + B(h)) / (R_c + h)``, ``A`` the expected precision sum of
the groups before the cut, ``B(h)`` that of the cut group. Expected precision and
recall at ``k`` are linear: ``E[X_k] = R_c + m r / n``.

All of this costs ``O(b)`` per query (``O(b + k)`` for ``@k``) after the counts
(:mod:`fghash.ranking`), never a sort of ``N`` items.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fghash.errors import FghashError
from fghash.ranking import RankingStats

__all__ = [
    "TIES",
    "Metric",
    "METRICS",
    "harmonic",
    "expected_ap",
    "expected_hits",
    "kth_distance",
    "average_precision",
    "precision_at_k",
    "recall_at_k",
    "pr_by_radius",
    "precision_at_radius",
    "knn_recall",
    "ap_of_ranked",
    "summarize",
]

TIES = ("tie-aware", "stable")
_BLOCK = 4096  # queries per block in the hypergeometric sums


def harmonic(n: int) -> np.ndarray:
    """``H[0..n]`` with ``H[0] = 0`` and ``H[i] = Σ_{j ≤ i} 1/j`` (float64)."""
    h = np.zeros(int(n) + 1)
    if n > 0:
        np.cumsum(1.0 / np.arange(1, int(n) + 1), out=h[1:])
    return h


def _log_factorial(n: int) -> np.ndarray:
    """``log(i!)`` for ``i = 0..n`` (float64, ``lgamma(i + 1)``)."""
    return np.array([math.lgamma(i + 1.0) for i in range(int(n) + 1)])


def _group_sum(
    c: np.ndarray, n: np.ndarray, r: np.ndarray, rc: np.ndarray, h: np.ndarray
) -> np.ndarray:
    """Expected sum of ``P@i`` over the relevant items of tie groups (module docstring)."""
    c, n, r, rc = np.broadcast_arrays(c, n, r, rc)
    s = h[c + n] - h[c]
    nf, rf = n.astype(np.float64), r.astype(np.float64)
    pair = np.where(n > 1, (rf - 1) / np.maximum(nf - 1, 1.0), 0.0) * (nf - (c + 1) * s)
    return np.where(n > 0, rf / np.maximum(nf, 1.0) * ((rc + 1) * s + pair), 0.0)


def _counts(n: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(n, dtype=np.int64)
    r = np.asarray(r, dtype=np.int64)
    if n.shape != r.shape or n.ndim != 2:
        raise FghashError(
            f"per-distance counts must be two [nq, bits+1] arrays, got {n.shape} and {r.shape}."
        )
    if np.any(r > n) or np.any(r < 0):
        raise FghashError("relevant counts must lie between 0 and the item counts.")
    return n, r


def _cut(n: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each query: ``min(k, N)``, the group holding rank ``k``, items before it, and
    how many of that group's items make the top ``k``."""
    cum = np.cumsum(n, axis=1)
    keff = np.minimum(int(k), cum[:, -1])
    b = np.argmax(cum >= keff[:, None], axis=1)
    before = cum[np.arange(len(n)), b] - n[np.arange(len(n)), b]
    return keff, b, before, keff - before


def expected_hits(n: np.ndarray, r: np.ndarray, k: int) -> np.ndarray:
    """Expected relevant items in the top ``k`` under random order within ties, ``[nq]``."""
    n, r = _counts(n, r)
    keff, b, before, m = _cut(n, k)
    idx = np.arange(len(n))
    r_in = np.where(np.arange(n.shape[1]) < b[:, None], r, 0).sum(axis=1)
    nb = n[idx, b]
    part = np.where(nb > 0, m * r[idx, b] / np.maximum(nb, 1), 0.0)
    return r_in + part


def expected_ap(n: np.ndarray, r: np.ndarray, k: int | None = None) -> np.ndarray:
    """Exact expected AP@k (``k=None``: AP@all) per query, from per-distance counts.

    ``n[q, d]``/``r[q, d]``: items / relevant items at distance ``d``. See the module
    docstring for the derivation.
    """
    n, r = _counts(n, r)
    nq, nbins = n.shape
    out = np.zeros(nq)
    if nq == 0:
        return out
    total = n.sum(axis=1)
    h = harmonic(int(total.max()))
    lf = np.zeros(1)  # log-factorials up to the largest cut group seen so far
    for s in range(0, nq, _BLOCK):
        sl = slice(s, min(nq, s + _BLOCK))
        nn, rr = n[sl], r[sl]
        c = np.cumsum(nn, axis=1) - nn
        rc = np.cumsum(rr, axis=1) - rr
        contrib = _group_sum(c, nn, rr, rc, h)
        if k is None:
            big_r = rr.sum(axis=1)
            out[sl] = np.divide(contrib.sum(axis=1), big_r, out=np.zeros(len(rr)), where=big_r > 0)
            continue
        keff, b, before, m = _cut(nn, k)
        inside = np.arange(nbins) < b[:, None]
        a = np.where(inside, contrib, 0.0).sum(axis=1)
        r_in = np.where(inside, rr, 0).sum(axis=1)
        idx = np.arange(len(nn))
        gn, gr = nn[idx, b], rr[idx, b]
        if len(lf) <= gn.max():
            lf = _log_factorial(int(gn.max()))
        hmax = int(np.minimum(gr, m).max())
        hh = np.arange(hmax + 1)[None, :]
        valid = (hh <= np.minimum(gr, m)[:, None]) & (m[:, None] - hh <= (gn - gr)[:, None])
        hc = np.where(valid, hh, 0)
        logp = (
            lf[gr][:, None]
            - lf[hc]
            - lf[np.where(valid, gr[:, None] - hc, 0)]
            + lf[np.where(valid, (gn - gr)[:, None], 0)]
            - lf[np.where(valid, m[:, None] - hc, 0)]
            - lf[np.where(valid, (gn - gr)[:, None] - m[:, None] + hc, 0)]
            - (lf[gn] - lf[m] - lf[gn - m])[:, None]
        )
        p = np.exp(np.where(valid, logp, -np.inf))  # exp(-inf) = 0: no overflow when masked
        bsum = _group_sum(before[:, None], m[:, None], hc, r_in[:, None], h)
        den = r_in[:, None] + hh
        term = np.divide(a[:, None] + bsum, den, out=np.zeros(p.shape), where=den > 0)
        out[sl] = (p * term).sum(axis=1)
    return out


def kth_distance(n: np.ndarray, k: int) -> np.ndarray:
    """The exact ``min(k, N)``-th smallest Hamming distance per query, from counts ``n``."""
    n = np.asarray(n, dtype=np.int64)
    cum = np.cumsum(n, axis=1)
    keff = np.minimum(int(k), cum[:, -1])
    return np.argmax(cum >= keff[:, None], axis=1)


def ap_of_ranked(rel: np.ndarray) -> np.ndarray:
    """AP of ranked relevance flags ``bool [nq, k]`` (DPSH ``CalcTopMap``: divided by the
    relevant items among them, 0 when there are none), per query."""
    rel = np.asarray(rel, dtype=bool)
    cum = np.cumsum(rel, axis=1)
    prec = cum / np.arange(1, rel.shape[1] + 1)
    hits = cum[:, -1] if rel.shape[1] else np.zeros(len(rel), dtype=np.int64)
    return np.divide((prec * rel).sum(axis=1), hits, out=np.zeros(len(rel)), where=hits > 0)


def _check_ties(ties: str, stats: RankingStats) -> None:
    if ties not in TIES:
        raise FghashError(f"ties must be one of {', '.join(TIES)}, got {ties!r}.")
    if stats.n_relevant is None:
        raise FghashError(
            "ranking metrics need labels; the codes file has none for query or database."
        )
    if ties == "tie-aware" and stats.r is None:
        raise FghashError(
            "tie-aware metrics need per-distance counts; this ranking has none (float ranking: use ties='stable')."
        )
    if ties == "stable" and stats.stable_ap is None:
        raise FghashError(
            "stable metrics were not computed for this ranking; rank with stable=True."
        )


def _stable_top(stats: RankingStats, k: int) -> np.ndarray:
    top = stats.stable_topk
    kk = min(int(k), stats.n_database)
    if top is None or top.shape[1] < kk:
        raise FghashError(f"stable metrics at k={k} need the ranking computed with kmax >= {kk}.")
    return top[:, :kk]


def average_precision(
    stats: RankingStats, k: int | None = None, ties: str = "tie-aware"
) -> np.ndarray:
    """Per-query AP@k (``k=None``: AP@all) under the given tie handling."""
    _check_ties(ties, stats)
    if ties == "tie-aware":
        return expected_ap(stats.n, stats.r, k)
    if k is None or k >= stats.n_database:
        return stats.stable_ap
    return ap_of_ranked(_stable_top(stats, k))


def _hits(stats: RankingStats, k: int, ties: str) -> np.ndarray:
    _check_ties(ties, stats)
    if ties == "tie-aware":
        return expected_hits(stats.n, stats.r, k)
    return _stable_top(stats, k).sum(axis=1).astype(np.float64)


def precision_at_k(stats: RankingStats, k: int, ties: str = "tie-aware") -> np.ndarray:
    """Per-query relevant items in the top ``k`` over ``min(k, N)``."""
    return _hits(stats, k, ties) / max(1, min(int(k), stats.n_database))


def recall_at_k(stats: RankingStats, k: int, ties: str = "tie-aware") -> np.ndarray:
    """Per-query relevant items in the top ``k`` over all relevant items (0 when none)."""
    hits = _hits(stats, k, ties)
    big_r = stats.n_relevant
    return np.divide(hits, big_r, out=np.zeros(len(hits)), where=big_r > 0)


def pr_by_radius(n: np.ndarray, r: np.ndarray) -> dict[str, np.ndarray]:
    """Precision and recall of retrieving everything within Hamming radius ``t = 0..bits``.

    Returns arrays over ``t``: ``precision`` (queries retrieving nothing count 0),
    ``precision_nonempty`` (mean over queries retrieving something), ``recall``, and
    ``nonempty`` (fraction of queries retrieving something).
    """
    n, r = _counts(n, r)
    ret, hit = np.cumsum(n, axis=1), np.cumsum(r, axis=1)
    big_r = r.sum(axis=1)[:, None]
    prec = np.divide(hit, ret, out=np.zeros(ret.shape), where=ret > 0)
    rec = np.divide(hit, big_r, out=np.zeros(hit.shape), where=big_r > 0)
    some = ret > 0
    cnt = some.sum(axis=0)
    nonempty_prec = np.divide(prec.sum(axis=0), cnt, out=np.zeros(n.shape[1]), where=cnt > 0)
    return {
        "radius": np.arange(n.shape[1]),
        "precision": prec.mean(axis=0),
        "precision_nonempty": nonempty_prec,
        "recall": rec.mean(axis=0),
        "nonempty": some.mean(axis=0),
    }


def precision_at_radius(n: np.ndarray, r: np.ndarray, radius: int = 2) -> np.ndarray:
    """Per-query precision within Hamming ``radius`` (0 when nothing is that close)."""
    n, r = _counts(n, r)
    t = min(int(radius), n.shape[1] - 1)
    ret, hit = n[:, : t + 1].sum(axis=1), r[:, : t + 1].sum(axis=1)
    return np.divide(hit, ret, out=np.zeros(len(n)), where=ret > 0)


def knn_recall(
    kth: np.ndarray, run_dist: np.ndarray, k: int, n_database: int | None = None
) -> np.ndarray:
    """Per-query k-NN recall, tie-aware (ann-benchmarks): returned items whose true
    distance is ``<= kth`` (the exact ``k``-th distance), over ``min(k, N)``.

    ``run_dist`` holds the *true* distances of the returned items ``[nq, >= k]`` (use a
    value above every real distance for missing results)."""
    run = np.asarray(run_dist)[:, : int(k)]
    kk = min(int(k), n_database) if n_database is not None else int(k)
    good = (run <= np.asarray(kth)[:, None]).sum(axis=1)
    return np.minimum(good, kk) / max(kk, 1)


@dataclass(frozen=True)
class Metric:
    """One metric: what it means, which direction is worse, and how to compute it.

    ``scope="query"`` functions take ``(stats, k, ties)`` and return per-query values
    (the metric is their mean); ``scope="run"`` functions take one throughput row.
    ``worst`` is ``-inf`` when higher is better (ann-benchmarks' convention).
    """

    description: str
    worst: float
    scope: str
    function: Callable[..., Any]
    uses_k: bool = False


def _row(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda row: row.get(key)


METRICS: dict[str, Metric] = {
    "map@all": Metric(
        "mean average precision over the whole ranking (ADSH/A²-Net protocol)",
        float("-inf"),
        "query",
        lambda st, k, ties: average_precision(st, None, ties),
    ),
    "map@k": Metric(
        "mean average precision of the top k (DPSH CalcTopMap)",
        float("-inf"),
        "query",
        lambda st, k, ties: average_precision(st, k, ties),
        uses_k=True,
    ),
    "precision@k": Metric(
        "precision of the top k", float("-inf"), "query", precision_at_k, uses_k=True
    ),
    "recall@k": Metric("recall of the top k", float("-inf"), "query", recall_at_k, uses_k=True),
    "precision@r2": Metric(
        "precision within Hamming radius 2 (nothing retrieved counts 0)",
        float("-inf"),
        "query",
        lambda st, k, ties: precision_at_radius(st.n, st.r, 2),
    ),
    "knn-recall@k": Metric(
        "recall of the exact binary k nearest neighbours, ties counted (ann-benchmarks)",
        float("-inf"),
        "run",
        lambda row, k: row["accuracy"].get(f"knn-recall@{k}"),
        uses_k=True,
    ),
    "run-map@k": Metric(
        "mean AP of the top k exactly as the index returns them",
        float("-inf"),
        "run",
        lambda row, k: row["accuracy"].get(f"map@{k}"),
        uses_k=True,
    ),
    "qps": Metric(
        "queries per second, whole query set in one batch", float("-inf"), "run", _row("qps")
    ),
    "latency-p50-ms": Metric(
        "single-query latency, median (ms)", float("inf"), "run", _row("latency_p50_ms")
    ),
    "latency-p99-ms": Metric(
        "single-query latency, 99th percentile (ms)", float("inf"), "run", _row("latency_p99_ms")
    ),
    "build-s": Metric("build time: train + add (s)", float("inf"), "run", _row("build_s")),
    "bytes-per-item": Metric(
        "index size per database item (bytes)", float("inf"), "run", _row("bytes_per_item")
    ),
}


def summarize(
    stats: RankingStats,
    ks: Sequence[int] = (1, 10, 100),
    ties: Sequence[str] = TIES,
    radius: int = 2,
) -> dict[str, Any]:
    """Every ranking metric as plain floats (means over queries), ready for JSON.

    ``{"n_queries", "n_database", "queries_without_relevant", "<ties>": {"map@all",
    "map@k": {k: .}, "precision@k": {k: .}, "recall@k": {k: .}}, "precision@r2",
    "pr_by_radius": {...}}`` — the last two only for Hamming rankings.
    """
    out: dict[str, Any] = {
        "n_queries": stats.n_queries,
        "n_database": stats.n_database,
        "queries_without_relevant": int(np.sum(stats.n_relevant == 0)),
    }
    for t in ties:
        res: dict[str, Any] = {"map@all": float(np.mean(average_precision(stats, None, t)))}
        for name, fn in (
            ("map", average_precision),
            ("precision", precision_at_k),
            ("recall", recall_at_k),
        ):
            res[f"{name}@k"] = {str(k): float(np.mean(fn(stats, k, t))) for k in ks}
        out[t] = res
    if stats.r is not None:
        out[f"precision@r{radius}"] = float(np.mean(precision_at_radius(stats.n, stats.r, radius)))
        out["pr_by_radius"] = {k: v.tolist() for k, v in pr_by_radius(stats.n, stats.r).items()}
    return out
