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
(:mod:`fghash.eval.ranking`), never a sort of ``N`` items.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fghash.errors import FghashError
from fghash.eval.ranking import RankingStats

__all__ = [
    "TIES",
    "Metric",
    "METRICS",
    "harmonic",
    "expected_ap",
    "expected_hits",
    "tie_aware_means",
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


class _TieAware:
    """The tie-aware figures of one block of queries, sharing the cumulative sums.

    ``cum_*`` are inclusive prefix sums over distances: items, relevant items, and the
    expected precision sums of whole groups (:func:`_group_sum`), so everything before
    the group that holds rank ``k`` is one lookup.
    """

    def __init__(self, n: np.ndarray, r: np.ndarray, h: np.ndarray, lf: _LogFactorials) -> None:
        self.n, self.r, self.h, self.lf = n, r, h, lf
        self.idx = np.arange(len(n))
        self.cum_n = np.cumsum(n, axis=1)
        self.cum_r = np.cumsum(r, axis=1)
        self.contrib = _group_sum(self.cum_n - n, n, r, self.cum_r - r, h)
        self.cum_contrib = np.cumsum(self.contrib, axis=1)

    def ap_all(self) -> np.ndarray:
        big_r = self.cum_r[:, -1]
        return np.divide(self.cum_contrib[:, -1], big_r, out=np.zeros(len(big_r)), where=big_r > 0)

    def cut(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per query: the group holding rank ``min(k, N)``, items before it, and how many
        of that group's items make the top ``k``."""
        keff = np.minimum(int(k), self.cum_n[:, -1])
        b = np.argmax(self.cum_n >= keff[:, None], axis=1)
        before = self.cum_n[self.idx, b] - self.n[self.idx, b]
        return b, before, keff - before

    def hits(self, k: int) -> np.ndarray:
        b, _, m = self.cut(k)
        gn, gr = self.n[self.idx, b], self.r[self.idx, b]
        r_in = self.cum_r[self.idx, b] - gr
        return r_in + np.where(gn > 0, m * gr / np.maximum(gn, 1), 0.0)

    def ap_at(self, k: int) -> np.ndarray:
        b, before, m = self.cut(k)
        i = self.idx
        gn, gr = self.n[i, b], self.r[i, b]
        a = self.cum_contrib[i, b] - self.contrib[i, b]
        r_in = self.cum_r[i, b] - gr
        lf = self.lf.upto(int(gn.max()) if len(gn) else 0)
        hmax = int(np.minimum(gr, m).max()) if len(gn) else 0
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
        bsum = _group_sum(before[:, None], m[:, None], hc, r_in[:, None], self.h)
        den = r_in[:, None] + hh
        term = np.divide(a[:, None] + bsum, den, out=np.zeros(p.shape), where=den > 0)
        return (p * term).sum(axis=1)


class _LogFactorials:
    """``log(i!)`` tables, grown on demand."""

    def __init__(self) -> None:
        self.table = np.zeros(1)

    def upto(self, n: int) -> np.ndarray:
        if len(self.table) <= n:
            self.table = _log_factorial(n)
        return self.table


def _blocks(n: np.ndarray, r: np.ndarray) -> Iterator[tuple[slice, _TieAware]]:
    """:class:`_TieAware` over blocks of ``_BLOCK`` queries (bounded memory)."""
    n, r = _counts(n, r)
    h = harmonic(int(n.sum(axis=1).max()) if len(n) else 0)
    lf = _LogFactorials()
    for s in range(0, len(n), _BLOCK):
        sl = slice(s, min(len(n), s + _BLOCK))
        yield sl, _TieAware(n[sl], r[sl], h, lf)


def expected_hits(n: np.ndarray, r: np.ndarray, k: int) -> np.ndarray:
    """Expected relevant items in the top ``k`` under random order within ties, ``[nq]``."""
    out = np.zeros(len(n))
    for sl, ta in _blocks(n, r):
        out[sl] = ta.hits(k)
    return out


def expected_ap(n: np.ndarray, r: np.ndarray, k: int | None = None) -> np.ndarray:
    """Exact expected AP@k (``k=None``: AP@all) per query, from per-distance counts.

    ``n[q, d]``/``r[q, d]``: items / relevant items at distance ``d``. See the module
    docstring for the derivation.
    """
    out = np.zeros(len(n))
    for sl, ta in _blocks(n, r):
        out[sl] = ta.ap_all() if k is None else ta.ap_at(k)
    return out


def tie_aware_means(
    n: np.ndarray, r: np.ndarray, ks: Sequence[int], n_database: int
) -> dict[str, Any]:
    """Means over queries of the tie-aware mAP@all and mAP/P/R@k, in one pass over the counts.

    ``{"map@all": ., "map@k": {k: .}, "precision@k": {k: .}, "recall@k": {k: .}}`` with
    string keys ``k``, as :func:`summarize` reports them (precision divides by
    ``min(k, n_database)``).
    """
    nq, n_db = len(n), int(n_database)
    sums = {"map@all": 0.0, **{f"{m}@{k}": 0.0 for m in ("map", "hits", "recall") for k in ks}}
    for _, ta in _blocks(n, r):
        sums["map@all"] += ta.ap_all().sum()
        big_r = ta.cum_r[:, -1]
        for k in ks:
            hits = ta.hits(k)
            sums[f"map@{k}"] += ta.ap_at(k).sum()
            sums[f"hits@{k}"] += hits.sum()
            sums[f"recall@{k}"] += np.divide(
                hits, big_r, out=np.zeros(len(hits)), where=big_r > 0
            ).sum()
    mean = {key: float(v / nq) if nq else 0.0 for key, v in sums.items()}
    return {
        "map@all": mean["map@all"],
        "map@k": {str(k): mean[f"map@{k}"] for k in ks},
        "precision@k": {str(k): mean[f"hits@{k}"] / max(1, min(int(k), n_db)) for k in ks},
        "recall@k": {str(k): mean[f"recall@{k}"] for k in ks},
    }


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
    nq, nbins = n.shape
    prec_sum, rec_sum, some_sum = np.zeros(nbins), np.zeros(nbins), np.zeros(nbins)
    for s in range(0, nq, _BLOCK):
        ret, hit = np.cumsum(n[s : s + _BLOCK], axis=1), np.cumsum(r[s : s + _BLOCK], axis=1)
        big_r = hit[:, -1:]
        prec_sum += np.divide(hit, ret, out=np.zeros(ret.shape), where=ret > 0).sum(axis=0)
        rec_sum += np.divide(hit, big_r, out=np.zeros(hit.shape), where=big_r > 0).sum(axis=0)
        some_sum += (ret > 0).sum(axis=0)
    q = max(nq, 1)
    return {
        "radius": np.arange(nbins),
        "precision": prec_sum / q,
        "precision_nonempty": np.divide(
            prec_sum, some_sum, out=np.zeros(nbins), where=some_sum > 0
        ),
        "recall": rec_sum / q,
        "nonempty": some_sum / q,
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
        if t == "tie-aware":
            _check_ties(t, stats)
            out[t] = tie_aware_means(stats.n, stats.r, ks, stats.n_database)
            continue
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
