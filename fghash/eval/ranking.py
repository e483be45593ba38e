"""Rank a query set against a database and keep exactly what the metrics need.

Ranking all ``N`` database items for every query and sorting them is what most
hashing code does (ADSH, DPSH, A²-Net all call ``np.argsort`` per query). It is slow
and, with Hamming distances, ill-defined: a ``b``-bit code has only ``b + 1`` possible
distances, so thousands of items tie and the order inside a tie decides the score.

Here every query chunk is reduced to

* ``n[q, d]`` – how many database items are at Hamming distance ``d`` from query ``q``,
* ``r[q, d]`` – how many of those are relevant to ``q``,

from which every tie-aware metric follows in closed form (:mod:`fghash.eval.metrics`), and,
when asked for, to the ``stable`` ranking (ties broken by ascending database position,
exactly what ``np.argsort(d, kind="stable")`` gives): its AP over the whole list and
the relevance of its first ``kmax`` items.

Distances are XOR + popcount on 64-bit words (:mod:`fghash.eval.hamming`), a block of
queries against a chunk of the database at a time, and each query row is counted into
``b + 1`` bins; the relevant counts ``r`` come from the same row gathered at the
query's class (single labels, ``N / classes`` items) or from the bins of
``d + (b + 1)·rel`` (multi-hot). This is ``O(N)`` cheap passes per query, no sort and
no ``N``-sized temporary per query set, so memory stays at the counts plus a few cached
blocks whatever ``N``.

Float features (the exact float baseline) are ranked by inner product or by L2 distance;
ties among float scores are rare and broken by database position (``stable``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np

from fghash.codes import nbytes_for
from fghash.errors import FghashError
from fghash.eval.hamming import (
    default_workers,
    hamming_block,
    histogram,
    padded_codes,
    pair_distances,
    row_histograms,
)

__all__ = [
    "RankingStats",
    "relevance",
    "hamming_matrix",
    "pair_distances",
    "rank_hamming",
    "rank_float",
    "rank_float_metrics",
    "float_scores",
    "float_scores_from_ip",
    "DEFAULT_CHUNK_BYTES",
    "DB_CHUNK",
]

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES = 256 << 20  # working memory per query chunk (stable and float rankings)
DB_CHUNK = 1 << 20  # database items per distance block when only counts are needed
_BLOCK_BYTES = 4 << 20  # int32 distances per counting block: stays in cache


@dataclass
class RankingStats:
    """What the metrics need about one query set ranked against one database.

    Hamming rankings fill ``n`` (and ``r`` when labels are known); float rankings
    leave them ``None``. ``stable_*`` are filled when the stable ranking was asked for.
    """

    n_database: int  # N, database size
    n_relevant: np.ndarray | None  # int64 [nq], relevant database items per query (R)
    n: np.ndarray | None = None  # int64 [nq, bits+1], items at each Hamming distance
    r: np.ndarray | None = None  # int64 [nq, bits+1], relevant items at each distance
    stable_ap: np.ndarray | None = None  # float64 [nq], AP over the whole stable ranking
    stable_topk: np.ndarray | None = None  # bool [nq, kmax], relevance of the first kmax
    bits: int | None = None  # code length, for Hamming rankings

    @property
    def n_queries(self) -> int:
        for a in (self.n, self.stable_ap, self.n_relevant, self.stable_topk):
            if a is not None:
                return int(a.shape[0])
        return 0


def relevance(qlabels: np.ndarray, dblabels: np.ndarray) -> np.ndarray:
    """Ground-truth relevance ``bool [nq, N]``: same label, or (multi-hot) a shared label."""
    ql, dl = np.asarray(qlabels), np.asarray(dblabels)
    if ql.ndim != dl.ndim:
        raise FghashError(
            "query and database labels differ in form (single label vs multi-hot); "
            "use the same form in both splits."
        )
    if ql.ndim == 1:
        return ql[:, None] == dl[None, :]
    if ql.shape[1] != dl.shape[1]:
        raise FghashError(
            f"query labels have {ql.shape[1]} classes but database labels have {dl.shape[1]}."
        )
    return (ql.astype(np.float32) @ dl.astype(np.float32).T) > 0


def _dist_dtype(bits: int) -> type:
    return np.uint8 if 2 * bits + 1 < 256 else np.uint16


def hamming_matrix(qcodes: np.ndarray, dbcodes: np.ndarray, bits: int) -> np.ndarray:
    """All Hamming distances ``[nq, N]`` (uint8 or uint16) between packed codes."""
    _check_codes(qcodes, bits, "query codes")
    _check_codes(dbcodes, bits, "database codes")
    d = hamming_block(padded_codes(qcodes, bits), padded_codes(dbcodes, bits))
    return d.astype(_dist_dtype(bits))


def _check_codes(codes: np.ndarray, bits: int, what: str) -> None:
    c = np.asarray(codes)
    if c.dtype != np.uint8 or c.ndim != 2 or c.shape[1] != nbytes_for(bits):
        raise FghashError(
            f"{what} must be uint8 [N, {nbytes_for(bits)}] for {bits}-bit codes, "
            f"got {c.dtype} {list(c.shape)}."
        )


def _dedupe_queries(
    qcodes: np.ndarray, qlabels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of distinct (code, label) query rows and the map back to all queries.

    Queries with the same code and label have identical rankings; trained codes repeat
    a lot (whole classes collapse onto a few codes), so this often saves most of the work.
    """
    if len(qcodes) == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    parts = [np.ascontiguousarray(qcodes, dtype=np.uint8)]
    if qlabels is not None:
        lab = np.asarray(qlabels)
        lab = lab.reshape(len(lab), -1).astype(np.int64)
        parts.append(np.ascontiguousarray(lab).view(np.uint8).reshape(len(lab), -1))
    key = np.ascontiguousarray(np.concatenate(parts, axis=1))
    void = key.view(np.dtype((np.void, key.shape[1]))).ravel()
    _, first, inverse = np.unique(void, return_index=True, return_inverse=True)
    return first, inverse.ravel()


def _chunks(n: int, per_row_bytes: int, chunk_bytes: int) -> Iterator[slice]:
    step = max(1, int(chunk_bytes // max(per_row_bytes, 1)))
    for s in range(0, n, step):
        yield slice(s, min(n, s + step))


def _progress(total: int, desc: str, progress: bool | None):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="query",
        disable=None if progress is None else not progress,
        leave=False,
    )


def _stable_from_order(rel_sorted: np.ndarray, kmax: int) -> tuple[np.ndarray, np.ndarray]:
    """AP over the whole list and the first ``kmax`` relevance flags, from ranked relevance."""
    nq, n = rel_sorted.shape
    rows, cols = np.nonzero(rel_sorted)
    counts = np.bincount(rows, minlength=nq)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    j = np.arange(rows.size) - starts[rows] + 1  # rank among relevant items
    ap = np.bincount(rows, weights=j / (cols + 1.0), minlength=nq)
    ap = np.divide(ap, counts, out=np.zeros(nq), where=counts > 0)
    top = np.zeros((nq, kmax), dtype=bool)
    w = min(kmax, n)
    top[:, :w] = rel_sorted[:, :w]
    return ap, top


def _stable_single_label_row(
    d: np.ndarray, counts: np.ndarray, pos: np.ndarray, kmax: int
) -> tuple[float, np.ndarray]:
    """Stable-order AP@all and top-``kmax`` relevance of one query row, without sorting it.

    ``d``: int32 distances of the row; ``counts``: its per-distance counts; ``pos``: the
    relevant positions, ascending. In the stable order the item at position ``p`` with
    distance ``t`` has rank ``C_t + w(p) + 1``, ``C_t`` the items closer than ``t`` and
    ``w(p)`` the items at distance ``t`` before ``p``. Cutting the row at the relevant
    positions, the ``i``-th relevant item sees in ``w`` exactly the segments before it,
    so one histogram of ``segment · (b + 1) + d`` and a prefix sum over segments give
    every ``w``. The top ``kmax`` are the items closer than the ``k``-th distance plus
    the first of those at it, by position.
    """
    nbins, n, big_r = len(counts), len(d), len(pos)
    closer = np.cumsum(counts) - counts
    ap = 0.0
    if big_r:
        seg = np.repeat(
            np.arange(big_r + 1, dtype=np.int32), np.diff(pos, prepend=0, append=n)
        )  # relevant items at positions <= j
        seg *= np.int32(nbins)
        seg += d
        h = np.empty((big_r + 1, nbins), dtype=np.int32)
        histogram(seg, h.reshape(-1))
        before = np.cumsum(h, axis=0, dtype=np.int64)[:-1]  # row i-1: items before p_i
        t = d[pos]
        ranks = np.sort(closer[t] + before[np.arange(big_r), t] + 1)
        ap = float(np.mean(np.arange(1, big_r + 1) / ranks))
    top = np.zeros(kmax, dtype=bool)
    k = min(kmax, n)
    if k:
        t_k = int(np.argmax(np.cumsum(counts) >= k))
        near = np.flatnonzero(d <= t_k)
        at = near[d[near] == t_k][: k - int(closer[t_k])]
        cand = np.concatenate([near[d[near] < t_k], at])
        best = cand[np.argsort(d[cand], kind="stable")]
        j = np.minimum(np.searchsorted(pos, best), max(big_r - 1, 0))
        top[:k] = (pos[j] == best) if big_r else False
    return ap, top


class _LabelSegments:
    """Where each query label's relevant database items are, chunk by chunk.

    The database positions are sorted by label (stably, so positions ascend inside a
    label); the items of label ``c`` in chunk ``[c0, c1)`` are then one contiguous run of
    that order, found by binary search once per distinct query label and chunk.
    """

    def __init__(self, uql: np.ndarray, dl: np.ndarray, step: int) -> None:
        self.order = np.argsort(dl, kind="stable")
        self.local = self.order % max(step, 1)  # position inside its chunk
        ulab, self.label_of = np.unique(uql, return_inverse=True)  # label index per query
        self.label_of = self.label_of.ravel()
        srt = dl[self.order]
        self.lo = np.searchsorted(srt, ulab, side="left")
        self.hi = np.searchsorted(srt, ulab, side="right")

    def bounds(self, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        """Per label index: start and end in ``order``/``local`` of its items in ``[c0, c1)``."""
        s = np.empty(len(self.lo), dtype=np.int64)
        e = np.empty(len(self.lo), dtype=np.int64)
        for k, (lo, hi) in enumerate(zip(self.lo, self.hi, strict=True)):
            seg = self.order[lo:hi]
            s[k] = lo + np.searchsorted(seg, c0)
            e[k] = lo + np.searchsorted(seg, c1)
        return s, e


def _label_blocks(label_of: np.ndarray, rows: int) -> list[slice]:
    """Blocks of at most ``rows`` consecutive queries, never across a change of label."""
    cuts = [0, *(np.flatnonzero(np.diff(label_of)) + 1).tolist(), len(label_of)]
    return [
        slice(s, min(e, s + rows))
        for a, e in zip(cuts[:-1], cuts[1:], strict=True)
        for s in range(a, e, rows)
    ]


def rank_hamming(
    qcodes: np.ndarray,
    dbcodes: np.ndarray,
    bits: int,
    qlabels: np.ndarray | None = None,
    dblabels: np.ndarray | None = None,
    *,
    stable: bool = True,
    kmax: int = 0,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: bool | None = None,
    db_chunk: int = DB_CHUNK,
    workers: int | None = None,
) -> RankingStats:
    """Rank every query against the whole database by Hamming distance.

    Returns per-distance counts ``n`` (and ``r`` when both label arrays are given), and,
    with ``stable=True`` and labels, the stable ranking's AP over the whole list and the
    relevance of its first ``kmax`` items. Queries with the same code and label are
    ranked once.

    Counts: distances of a block of queries against a chunk of ``db_chunk`` database
    items (:func:`fghash.eval.hamming.hamming_block`, a few MB that stay in cache), then one
    histogram per query row; with single labels ``r`` is the histogram of the row
    gathered at the query's class (``N / classes`` items), with multi-hot labels that of
    ``d + (b + 1)·rel``. Memory: the counts plus ``workers`` blocks, whatever ``N``.
    The stable ranking needs whole rows, so it ignores ``db_chunk`` and keeps about
    ``chunk_bytes`` of rows in flight; with single labels it sorts nothing
    (:func:`_stable_single_label_row`), with multi-hot labels it sorts each row by
    distance (stable). Blocks run in ``workers`` threads (default
    :func:`fghash.eval.hamming.default_workers`).
    """
    bits = int(bits)
    _check_codes(qcodes, bits, "query codes")
    _check_codes(dbcodes, bits, "database codes")
    labelled = qlabels is not None and dblabels is not None
    job = _HammingRanking(
        qcodes,
        bits,
        qlabels if labelled else None,
        dblabels if labelled else None,
        stable=stable and labelled,
        kmax=kmax,
        workers=max(1, int(workers or default_workers())),
        n_db=dbcodes.shape[0],
        db_chunk=db_chunk,
    )
    job.run(dbcodes, chunk_bytes, progress)
    return job.stats()


class _HammingRanking:
    """The state of one :func:`rank_hamming` call: the distinct queries in processing
    order, their count arrays, and the per-thread buffers that blocks reuse."""

    def __init__(
        self,
        qcodes: np.ndarray,
        bits: int,
        qlabels: np.ndarray | None,
        dblabels: np.ndarray | None,
        *,
        stable: bool,
        kmax: int,
        workers: int,
        n_db: int,
        db_chunk: int,
    ) -> None:
        self.bits, self.nbins, self.stable, self.kmax = bits, bits + 1, stable, kmax
        self.labelled = qlabels is not None
        self.workers, self.n_db = workers, n_db
        first, self.inverse = _dedupe_queries(qcodes, qlabels)
        uql = np.asarray(qlabels)[first] if self.labelled else None
        self.dl = np.asarray(dblabels) if self.labelled else None
        self.single = self.labelled and uql.ndim == 1 and self.dl.ndim == 1
        if self.labelled and not self.single:
            relevance(uql[:1], self.dl[:1])  # same form in both splits, or one clear sentence
        nu = len(first)
        logger.debug("ranking %d queries (%d distinct) against %d items", len(qcodes), nu, n_db)
        self.step = max(1, n_db if stable else min(n_db, int(db_chunk)))
        self.segments = _LabelSegments(uql, self.dl, self.step) if self.single else None
        # Queries in label order (single labels), so a block shares one class: its
        # relevant items are one gather of columns for the whole block.
        self.perm = (
            np.argsort(self.segments.label_of, kind="stable") if self.single else np.arange(nu)
        )
        self.uq = padded_codes(qcodes[first], bits)[self.perm]
        self.mult = np.bincount(self.inverse, minlength=nu)[self.perm]
        self.uql = uql[self.perm] if self.labelled else None
        self.label_of = self.segments.label_of[self.perm] if self.single else None
        self.count_n = np.zeros((nu, self.nbins), dtype=np.int64)
        self.count_r = np.zeros((nu, self.nbins), dtype=np.int64) if self.labelled else None
        self.ap = np.zeros(nu) if stable else None
        self.top = np.zeros((nu, kmax), dtype=bool) if stable else None
        # histogram bins per query row: (irrelevant, relevant) pairs for multi-hot labels
        self.width = 2 * self.nbins if self.labelled and not self.single else self.nbins
        self.local = threading.local()

    def run(self, dbcodes: np.ndarray, chunk_bytes: int, progress: bool | None) -> None:
        """Count every block of distinct queries against every chunk of the database."""
        # bytes per (query, item) pair held at once: int32 distances, and for the stable
        # ranking relevance, small distances, int64 order and gathered relevance.
        dist_bytes = np.dtype(_dist_dtype(self.bits)).itemsize
        per_pair = 4 + (1 + dist_bytes + 8 + 1 if self.stable else 0)
        stable_bytes = max(1, chunk_bytes // self.workers)
        block_bytes = stable_bytes if self.stable else min(chunk_bytes, _BLOCK_BYTES)
        n_chunks = -(-self.n_db // self.step)
        with (
            _progress(len(self.inverse) * n_chunks, "Hamming ranking", progress) as bar,
            ThreadPoolExecutor(self.workers) as pool,
        ):
            for c0 in range(0, self.n_db, self.step):
                dbp = padded_codes(dbcodes[c0 : c0 + self.step], self.bits)
                seg = self.segments.bounds(c0, c0 + dbp.shape[0]) if self.single else None
                rows = max(1, block_bytes // (per_pair * dbp.shape[0]))
                blocks = (
                    _label_blocks(self.label_of, rows)
                    if self.single
                    else _chunks(len(self.uq), 1, rows)
                )
                futures = {
                    pool.submit(self._count_block, sl, c0, dbp, seg): int(self.mult[sl].sum())
                    for sl in blocks
                }
                for fut in as_completed(futures):
                    fut.result()
                    bar.update(futures[fut])

    def _buffers(self, rows: int, n_items: int) -> threading.local:
        local = self.local
        if getattr(local, "rows", -1) < rows or local.n_items < n_items:
            local.rows, local.n_items = rows, n_items
            local.dist = np.empty(rows * n_items, dtype=np.int32)
            local.hist = np.empty((rows, self.width), dtype=np.int32)
            local.offsets = np.arange(rows, dtype=np.int32)[:, None] * np.int32(self.width)
        return local

    def _count_block(self, sl: slice, c0: int, dbp: np.ndarray, seg: tuple | None) -> None:
        m = sl.stop - sl.start
        buf = self._buffers(m, dbp.shape[0])
        d = hamming_block(self.uq[sl], dbp, buf.dist)
        h = buf.hist[:m]
        if self.labelled and not self.single:
            self._count_multi_hot(sl, d, h, self.dl[c0 : c0 + dbp.shape[0]])
            return
        row_histograms(d, h)
        self.count_n[sl] += h
        if self.single:
            self._count_single_label(sl, d, h, buf.offsets[:m], seg)

    def _count_multi_hot(self, sl: slice, d: np.ndarray, h: np.ndarray, dl: np.ndarray) -> None:
        """Bins ``d + (b+1)·rel`` give the (irrelevant, relevant) counts in one histogram."""
        rel = relevance(self.uql[sl], dl)
        if self.stable:
            order = np.argsort(d.astype(_dist_dtype(self.bits)), axis=1, kind="stable")
            rs = np.take_along_axis(rel, order, axis=1)
            self.ap[sl], self.top[sl] = _stable_from_order(rs, self.kmax)
        d += rel.astype(np.int32) * np.int32(self.nbins)
        row_histograms(d, h)
        nb = self.nbins
        self.count_r[sl] += h[:, nb:]
        self.count_n[sl] += h[:, :nb] + h[:, nb:]

    def _count_single_label(
        self, sl: slice, d: np.ndarray, h: np.ndarray, offsets: np.ndarray, seg: tuple
    ) -> None:
        """The block's class: gather its columns, shift row i's bins by i·(b+1)."""
        k = self.label_of[sl.start]
        members = self.segments.local[seg[0][k] : seg[1][k]]
        if self.stable:  # whole rows (one chunk): h holds each row's counts
            for i in range(sl.stop - sl.start):
                self.ap[sl.start + i], self.top[sl.start + i] = _stable_single_label_row(
                    d[i], h[i], members, self.kmax
                )
        g = np.take(d, members, axis=1)
        g += offsets
        histogram(g.reshape(-1), h.reshape(-1))
        self.count_r[sl] += h

    def stats(self) -> RankingStats:
        """The counts (and stable scores) of every query, in the caller's query order."""
        nu = len(self.perm)
        row_of = np.empty(nu, dtype=np.intp)
        row_of[self.perm] = np.arange(nu)
        back = row_of[self.inverse]  # each query's row in the processing order
        r = self.count_r[back] if self.labelled else None
        return RankingStats(
            n_database=self.n_db,
            n_relevant=r.sum(axis=1) if self.labelled else None,
            n=self.count_n[back],
            r=r,
            stable_ap=self.ap[back] if self.stable else None,
            stable_topk=self.top[back] if self.stable else None,
            bits=self.bits,
        )


def _check_features(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise FghashError(f"{what} must be a float [N, D] array, got {x.dtype} {list(x.shape)}.")
    for s in range(0, len(x), 1 << 16):  # in slices: no x-sized temporary
        if not np.isfinite(x[s : s + (1 << 16)]).all():
            raise FghashError(f"{what} contain NaN or infinite values; re-encode the codes file.")
    return np.ascontiguousarray(x, dtype=np.float32)


def float_scores(
    xq: np.ndarray, xb: np.ndarray, metric: str, xb_norms: np.ndarray | None = None
) -> np.ndarray:
    """Scores ``[nq, N]``, higher is better: ``q·x`` (``"ip"``) or ``2 q·x - |x|²`` (``"l2"``,
    which orders items like ascending ``|q - x|²``)."""
    if metric not in ("ip", "l2"):
        raise FghashError(f"float metric must be 'ip' or 'l2', got {metric!r}.")
    s = xq @ xb.T
    if metric == "l2":
        return float_scores_from_ip(s, xb_norms if xb_norms is not None else _sq_norms(xb))
    s += 0.0  # turn -0.0 into +0.0 so equal scores compare equal bitwise too
    return s


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def rank_float(
    xq: np.ndarray,
    xb: np.ndarray,
    qlabels: np.ndarray,
    dblabels: np.ndarray,
    *,
    metric: str = "ip",
    kmax: int = 0,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: bool | None = None,
) -> RankingStats:
    """Exact float search ranking (what FAISS ``IndexFlatIP``/``IndexFlatL2`` return), stable.

    Ranks are computed without sorting item indices: each row's scores are sorted once,
    and the rank of a relevant item is one plus the number of strictly better scores
    (binary search) plus the number of equal scores at smaller database positions.
    """
    return rank_float_metrics(
        xq, xb, qlabels, dblabels, (metric,), kmax=kmax, chunk_bytes=chunk_bytes, progress=progress
    )[metric]


def _stable_float_row(
    row: np.ndarray, srow: np.ndarray, pos: np.ndarray, rel_row: np.ndarray, kk: int
) -> tuple[float, np.ndarray | None]:
    """AP over the stable ranking of one score row (``srow`` sorted), and its top ``kk``."""
    n_db = row.size
    ap = 0.0
    if pos.size:
        v = row[pos]
        right = np.searchsorted(srow, v, side="right")
        ranks = n_db - right + 1
        for j in np.flatnonzero(right - np.searchsorted(srow, v, side="left") > 1):
            ranks[j] += np.count_nonzero(row[: pos[j]] == v[j])  # rare exact ties: by position
        ranks.sort()
        ap = float(np.mean(np.arange(1, pos.size + 1) / ranks))
    if not kk:
        return ap, None
    cand = np.flatnonzero(row >= srow[n_db - kk])
    best = cand[np.lexsort((cand, -row[cand]))][:kk]
    return ap, rel_row[best]


def rank_float_metrics(
    xq: np.ndarray,
    xb: np.ndarray,
    qlabels: np.ndarray,
    dblabels: np.ndarray,
    metrics: Sequence[str] = ("ip", "l2"),
    *,
    kmax: int = 0,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: bool | None = None,
) -> dict[str, RankingStats]:
    """:func:`rank_float` for several metrics at once, ``{metric: stats}``.

    One product ``q·x`` per chunk serves them all (``l2`` ranks by ``2 q·x - |x|²``), so
    the ``ip`` and ``l2`` baselines cost one pass over the features, not two.
    """
    for metric in metrics:
        if metric not in ("ip", "l2"):
            raise FghashError(f"float metric must be 'ip' or 'l2', got {metric!r}.")
    xq = _check_features(xq, "query features")
    xb = _check_features(xb, "database features")
    if xq.shape[1] != xb.shape[1]:
        raise FghashError(
            f"query features have {xq.shape[1]} dimensions but database features have {xb.shape[1]}."
        )
    nq, n_db = xq.shape[0], xb.shape[0]
    norms = _sq_norms(xb) if "l2" in metrics else None
    ql, dl = np.asarray(qlabels), np.asarray(dblabels)
    ap = {m: np.zeros(nq) for m in metrics}
    top = {m: np.zeros((nq, kmax), dtype=bool) for m in metrics}
    n_rel = np.zeros(nq, dtype=np.int64)
    kk = min(kmax, n_db)

    def one_row(q: int, ip_row: np.ndarray) -> None:
        rel = relevance(ql[q : q + 1], dl)[0]
        pos = np.flatnonzero(rel)
        n_rel[q] = pos.size
        for metric in metrics:
            row = ip_row if metric == "ip" else float_scores_from_ip(ip_row, norms)
            ap[metric][q], t = _stable_float_row(row, np.sort(row), pos, rel, kk)
            if t is not None:
                top[metric][q, :kk] = t

    # one product per chunk of queries (BLAS threads), then rows in threads: the sorts
    # release the GIL
    with (
        _progress(nq, f"float {', '.join(metrics)} ranking", progress) as bar,
        ThreadPoolExecutor(default_workers()) as pool,
    ):
        for sl in _chunks(nq, n_db * 4, chunk_bytes):
            ip = float_scores(xq[sl], xb, "ip")
            list(pool.map(one_row, range(sl.start, sl.stop), ip))
            bar.update(ip.shape[0])
    return {
        m: RankingStats(n_database=n_db, n_relevant=n_rel, stable_ap=ap[m], stable_topk=top[m])
        for m in metrics
    }


def float_scores_from_ip(ip: np.ndarray, xb_norms: np.ndarray) -> np.ndarray:
    """L2 scores ``2 q·x - |x|²`` (higher is better) from inner products, a new array."""
    s = ip * 2
    s -= xb_norms
    s += 0.0  # turn -0.0 into +0.0 so equal scores compare equal bitwise too
    return s
