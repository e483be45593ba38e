"""Hamming search, then float re-ranking: ``fghash search --rerank relaxed|features``.

The index returns the ``k·X`` Hamming nearest (``X``: ``--oversample``); their float
vectors, read from the bundle's codes file (only those rows), are scored against the
query's float vector and the best ``k`` are returned with their ``score``:

* ``metric="ip"`` (default): the inner product ``q·x``, as ``fghash bench``'s exact
  ``float-ip`` row (FAISS ``IndexFlatIP``) ranks;
* ``metric="l2"``: ``-‖q - x‖²``, as the ``float-l2`` row (``IndexFlatL2``) ranks.

Higher scores are nearer. Equal scores keep the Hamming order (smaller distance first,
then the index's own order within ties, :mod:`index.binary`). With ``k·X`` at least the
database size every item is a candidate and the result is the exact float search.

``relaxed`` needs the codes file's ``features`` of kind ``relaxed_code``; ``features``
needs any other kind (``backbone`` from ``fghash encode --features backbone``, or a
generated set's). ``index.json`` records the kind and dimension at build time
(``codes.floats``). Before re-ranking the codes file must exist, hold those vectors with
one row per indexed item, and match the recorded SHA-256 (hashed when it is at most
:data:`index.checks.AUTO_VERIFY_BYTES`, or with ``verify``); the ids of every candidate
row are compared with the index's, so rows that no longer line up are refused too.
Candidates are scored in place in the file's bytes (memory-mapped, for the unfiltered
row-chunked float32 datasets fghash writes; FAISS's threaded ``*_by_idx`` loops, no row
copied), else gathered per block of queries, sorted and unique, through h5py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fghash.codes import file_checksum
from fghash.errors import FghashError
from index.checks import AUTO_VERIFY_BYTES

__all__ = [
    "RERANK_KINDS",
    "METRICS",
    "DEFAULT_OVERSAMPLE",
    "MAX_OVERSAMPLE",
    "FloatRows",
    "check_rerank",
    "check_rerank_query",
    "floats_of_codes",
    "floats_record",
    "open_floats",
    "query_floats",
    "rerank",
    "Reranked",
    "score_candidates",
    "top_stable",
    "search_reranked",
]

RERANK_KINDS = ("relaxed", "features")
METRICS = ("ip", "l2")
DEFAULT_OVERSAMPLE = 10
MAX_OVERSAMPLE = 1000
# Floats of candidate vectors held at once while scoring a block of queries (128 MB).
_BLOCK_FLOATS = 1 << 25


def check_rerank(rerank: str, oversample: Any, metric: str) -> None:
    """Refuse an unknown ``rerank`` kind or ``metric`` and an ``oversample`` out of range."""
    if rerank not in RERANK_KINDS:
        raise FghashError(f"rerank must be 'relaxed' or 'features', got {rerank!r}.")
    if metric not in METRICS:
        raise FghashError(f"the re-ranking metric must be 'ip' or 'l2', got {metric!r}.")
    if (
        isinstance(oversample, bool)
        or not isinstance(oversample, int)
        or not 1 <= oversample <= MAX_OVERSAMPLE
    ):
        raise FghashError(
            f"oversample must be an integer from 1 to {MAX_OVERSAMPLE}, got {oversample!r}."
        )


def _kind_fits(kind: str | None, rerank: str) -> bool:
    if kind is None:
        return False
    return kind == "relaxed_code" if rerank == "relaxed" else kind != "relaxed_code"


def _what(rerank: str) -> str:
    return "relaxed codes" if rerank == "relaxed" else "float features (such as backbone ones)"


def floats_record(ds: Any) -> dict[str, Any] | None:
    """``index.json``'s ``codes.floats`` for a split's ``features`` h5py dataset (or None)."""
    if ds is None:
        return None
    kind = ds.attrs.get("kind", "unknown")
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    return {"kind": kind, "dim": int(ds.shape[1])}


def _runs(ds: Any) -> list[tuple[int, int, int]] | None:
    """``(first row, end row, byte offset)`` of the stretches of ``ds`` stored as plain
    consecutive rows in the file, or None when HDF5 must do the reading."""
    if ds.ndim < 1 or ds.shape[0] == 0 or ds.id.get_create_plist().get_nfilters():
        return None
    row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
    n = int(ds.shape[0])
    if ds.chunks is None:
        offset = ds.id.get_offset()
        return None if offset is None else [(0, n, int(offset))]
    if tuple(ds.chunks[1:]) != tuple(ds.shape[1:]):
        return None
    step = int(ds.chunks[0])
    infos = [ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks())]
    if len(infos) != -(-n // step) or any(i.filter_mask or i.byte_offset is None for i in infos):
        return None
    runs: list[list[int]] = []
    for info in sorted(infos, key=lambda i: i.chunk_offset[0]):
        r0, off = int(info.chunk_offset[0]), int(info.byte_offset)
        r1 = min(n, r0 + step)
        if runs and runs[-1][1] == r0 and runs[-1][2] + (r0 - runs[-1][0]) * row_bytes == off:
            runs[-1][1] = r1
        else:
            runs.append([r0, r1, off])
    return [(a, b, c) for a, b, c in runs]


class _Rows:
    """Rows of one dataset, read by position without reading the rest."""

    def __init__(self, path: Path, ds: Any) -> None:
        self.ds, self.rest, self.dtype = ds, tuple(ds.shape[1:]), ds.dtype
        runs = _runs(ds)
        self._views: list[tuple[int, np.ndarray]] | None = None
        if runs is not None:
            mm = np.memmap(path, dtype=np.uint8, mode="r")
            per_row = int(np.prod(self.rest, dtype=np.int64))
            self._views = [
                (a, np.frombuffer(mm, self.dtype, (b - a) * per_row, c).reshape(b - a, *self.rest))
                for a, b, c in runs
            ]

    @property
    def views(self) -> list[tuple[int, np.ndarray]] | None:
        """``(first row, rows)`` of each memory-mapped stretch, or None (HDF5 reads)."""
        return self._views

    def take(self, pos: np.ndarray) -> np.ndarray:
        """Rows at the positions ``pos`` (sorted and unique unless :attr:`views`)."""
        if self._views is None:
            return np.asarray(self.ds[pos]) if len(pos) else np.empty((0, *self.rest), self.dtype)
        out = np.empty((len(pos), *self.rest), self.dtype)
        starts = np.array([a for a, _ in self._views])
        which = np.searchsorted(starts, pos, side="right") - 1
        for j in np.unique(which):
            sel = which == j
            a, view = self._views[j]
            out[sel] = view[pos[sel] - a]
        return out


class FloatRows:
    """The database float vectors of a bundle's codes file, one row per indexed item."""

    def __init__(self, path: Path, split: str, items_ids: np.ndarray) -> None:
        import h5py

        self.path, self.split = path, split
        self._f = h5py.File(path, "r")
        g = self._f[split]
        self.kind = floats_record(g["features"])["kind"]  # type: ignore[index]
        self.dim = int(g["features"].shape[1])
        self._vecs, self._ids = _Rows(path, g["features"]), _Rows(path, g["ids"])
        self._items_ids = items_ids

    def _check_ids(self, pos: np.ndarray) -> None:
        if not np.array_equal(self._ids.take(pos), np.asarray(self._items_ids[pos])):
            raise FghashError(
                f"the rows of {self.path} no longer line up with the index's items (other ids "
                "at the same positions); rebuild the index from it to re-rank."
            )

    def take(self, pos: np.ndarray) -> np.ndarray:
        """float32 vectors of the sorted unique database positions ``pos``."""
        self._check_ids(pos)
        return np.asarray(self._vecs.take(pos), dtype=np.float32)

    def score(self, fq: np.ndarray, I: np.ndarray, metric: str) -> np.ndarray:
        """:func:`score_candidates` of the queries ``fq`` against the rows ``I``, read
        in place from the memory-mapped file when it stores them as plain float32 rows."""
        views = self._vecs.views
        if views is None or self._vecs.dtype != np.float32 or self._ids.views is None:
            return score_candidates(fq, I, self.take, metric)
        self._check_ids(I[I >= 0])
        S = np.full(I.shape, -np.inf, np.float32)
        for a, view in views:
            inside = (I >= a) & (I < a + len(view))
            if inside.any():
                local = np.where(inside, I - a, -1)
                np.copyto(S, _by_idx(fq, view.reshape(len(view), -1), local, metric), where=inside)
        return S

    def close(self) -> None:
        self._f.close()


def _refuse(bundle: Any, why: str) -> FghashError:
    return FghashError(f"cannot re-rank the results of {bundle}: {why}")


def open_floats(
    meta: dict[str, Any], bundle: Any, rerank: str, items_ids: np.ndarray, verify: bool | None
) -> FloatRows:
    """The database vectors ``rerank`` asks for, after the checks the module describes."""
    import h5py

    source = meta.get("codes") or {}
    if not source.get("path"):
        raise _refuse(bundle, "it records no codes file to read float vectors from.")
    path, split = Path(source["path"]), source.get("split", "database")
    recorded = source.get("floats", "unknown")
    if recorded is None or (
        isinstance(recorded, dict) and not _kind_fits(recorded.get("kind"), rerank)
    ):
        had = "no float vectors" if recorded is None else f"{recorded.get('kind')} vectors"
        raise _refuse(
            bundle, f"its codes file {path} had {had} when it was built, not {_what(rerank)}."
        )
    if not path.is_file():
        raise _refuse(bundle, f"its codes file {path} is missing.")
    size = path.stat().st_size
    if (verify or (verify is None and size <= AUTO_VERIFY_BYTES) or recorded == "unknown") and (
        source.get("checksum") and file_checksum(path) != source["checksum"]
    ):
        raise _refuse(bundle, f"its codes file {path} changed since (its SHA-256 differs).")
    with h5py.File(path, "r") as f:
        ds = f[split]["features"] if split in f and "features" in f[split] else None
        got = floats_record(ds)
        n = None if ds is None else int(ds.shape[0])
    if got is None or not _kind_fits(got["kind"], rerank):
        raise _refuse(bundle, f"its codes file {path} holds no {_what(rerank)} in /{split}.")
    if isinstance(recorded, dict) and recorded.get("dim") != got["dim"]:
        raise _refuse(bundle, f"its codes file {path} changed since (other vector width).")
    if n != len(items_ids):
        raise _refuse(bundle, f"{path} holds {n} rows in /{split} but the index {len(items_ids)}.")
    return FloatRows(path, split, items_ids)


def query_floats(
    codes: str | os.PathLike[str], split: str, n: int, rerank: str, dim: int
) -> np.ndarray:
    """The first ``n`` rows of the float vectors of a queries codes file's ``split``."""
    import h5py

    with h5py.File(codes, "r") as f:
        ds = f[split]["features"] if "features" in f[split] else None
        got = floats_record(ds)
        if got is None or not _kind_fits(got["kind"], rerank) or got["dim"] != dim:
            raise FghashError(
                f"{codes} holds no {dim}-d {_what(rerank)} for its {split} queries, so they "
                "cannot be re-ranked; encode them as the index's codes file was encoded."
            )
        return np.asarray(ds[:n], dtype=np.float32)


def _by_idx(fq: np.ndarray, base: np.ndarray, ids: np.ndarray, metric: str) -> np.ndarray:
    """``[nq, m]`` scores of ``fq[i]`` against ``base[ids[i, j]]`` (``-inf`` where the id is
    -1), in FAISS's threaded loops: no candidate vector is copied."""
    import faiss

    fq = np.ascontiguousarray(fq, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    nq, m = ids.shape
    out = np.empty((nq, m), np.float32)
    if out.size:
        fn = faiss.fvec_inner_products_by_idx if metric == "ip" else faiss.fvec_L2sqr_by_idx
        ptr = faiss.swig_ptr
        fn(ptr(out), ptr(fq), ptr(base), ptr(ids), base.shape[1], nq, m)
        if metric == "l2":
            np.negative(out, out=out)
        out[ids < 0] = -np.inf
    return out


def score_candidates(fq: np.ndarray, I: np.ndarray, vectors: Any, metric: str = "ip") -> np.ndarray:
    """``[nq, m]`` float32 scores (``ip``: ``q·x``; ``l2``: ``-‖q - x‖²``; ``-inf`` where
    ``I`` is -1) of each query's candidate rows ``I`` of the database ``vectors``.

    ``vectors`` is the float32 ``[n, d]`` database (in memory or memory-mapped: scored in
    place), an object with ``score(fq, I, metric)`` (:class:`FloatRows`) or a function
    ``take(sorted unique positions) -> vectors``, called once per block of queries whose
    candidates' vectors fill at most :data:`_BLOCK_FLOATS` floats.
    """
    I = np.asarray(I)
    if hasattr(vectors, "score"):
        return vectors.score(fq, I, metric)
    if isinstance(vectors, np.ndarray) and vectors.ndim == 2 and vectors.dtype == np.float32:
        return _by_idx(fq, np.ascontiguousarray(vectors), I, metric)
    take = vectors if callable(vectors) else vectors.__getitem__
    nq, m = I.shape
    S = np.empty((nq, m), np.float32)
    step = max(1, _BLOCK_FLOATS // max(1, m * fq.shape[1]))
    for s in range(0, nq, step):
        ib = I[s : s + step]
        valid = ib >= 0
        uniq = np.unique(ib[valid])
        vecs = take(uniq) if len(uniq) else np.zeros((1, fq.shape[1]), np.float32)
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        j = np.where(valid, np.searchsorted(uniq, ib), -1)
        S[s : s + step] = _by_idx(fq[s : s + step], vecs, j, metric)
    return S


def top_stable(S: np.ndarray, k: int) -> np.ndarray:
    """Columns of the ``k`` highest scores of each row, highest first, equal scores in
    column order: ``np.argsort(-S, axis=1, kind="stable")[:, :k]``, selecting before
    sorting."""
    nq, m = S.shape
    neg = -S
    if k >= m or nq == 0 or k == 0:
        return np.argsort(neg, axis=1, kind="stable")[:, :k]
    kth = np.partition(neg, k - 1, axis=1)[:, k - 1 : k]
    below = neg < kth
    tied = neg == kth
    need = k - below.sum(axis=1, keepdims=True)
    pick = below | (tied & (np.cumsum(tied, axis=1) <= need))
    if not (pick.sum(axis=1) == k).all():  # NaN scores: leave them to argsort
        return np.argsort(neg, axis=1, kind="stable")[:, :k]
    cols = np.nonzero(pick)[1].reshape(nq, k)
    order = np.argsort(np.take_along_axis(neg, cols, 1), axis=1, kind="stable")
    return np.take_along_axis(cols, order, 1)


def rerank(
    D: np.ndarray,
    I: np.ndarray,
    fq: np.ndarray,
    vectors: Any,
    k: int,
    metric: str = "ip",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-rank Hamming results ``(D, I)`` (``I = -1``: none) by float score.

    ``vectors``: the database's float vectors, as :func:`score_candidates` takes them;
    ``fq`` are the queries' vectors. Returns ``(D, I, S)`` ``[nq, k]``: Hamming
    distances, positions and scores of the best ``k`` candidates (highest score first,
    equal scores in the order of ``I``); missing slots keep ``I = -1`` and get
    ``S = -inf``.
    """
    D, I = np.asarray(D), np.asarray(I)
    fq = np.ascontiguousarray(fq, dtype=np.float32)
    k = min(k, I.shape[1])
    S = score_candidates(fq, I, vectors, metric)
    order = top_stable(S, k)
    return (
        np.take_along_axis(D, order, 1),
        np.take_along_axis(I, order, 1).astype(np.int64, copy=False),
        np.take_along_axis(S, order, 1),
    )


class Reranked:
    """A binary index whose ``search(xq, k)`` returns ``rerank``'s top ``k`` of its
    ``k·oversample`` Hamming nearest; the scores of the last search are in ``scores``."""

    def __init__(
        self, index: Any, rows: FloatRows, fq: np.ndarray, oversample: int, metric: str
    ) -> None:
        self.index, self.rows, self.fq = index, rows, fq
        self.oversample, self.metric = oversample, metric
        self.ntotal = index.ntotal
        self.scores: np.ndarray | None = None

    def search(self, xq: np.ndarray, k: int, **kw: Any) -> tuple[np.ndarray, np.ndarray]:
        m = min(k * self.oversample, int(self.ntotal))
        D, I = self.index.search(xq, m, **kw)
        D, I, self.scores = rerank(D, I, self.fq, self.rows, k, self.metric)
        return D, I

    def add_scores(self, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Put each result's ``score`` (float) beside its ``distance``."""
        assert self.scores is not None
        for qi, r in enumerate(results):
            for hit in r["results"]:
                hit["score"] = float(self.scores[qi, hit["rank"] - 1])
        return results


def check_rerank_query(rerank: str, oversample: Any, metric: str, code: str | None) -> None:
    """:func:`check_rerank`, and refuse a hex code query: it has no float vector."""
    check_rerank(rerank, oversample, metric)
    if code is not None:
        raise FghashError(
            "a hex --code query has no float vector to re-rank with; search with --codes "
            "(a codes file holding the vectors) or images instead, or leave out --rerank."
        )


def search_reranked(
    bundle: Any,
    meta: dict[str, Any],
    index: Any,
    items: Any,
    xq: np.ndarray,
    k: int,
    *,
    rerank: str,
    oversample: int,
    metric: str,
    fq: np.ndarray | None,
    codes: str | os.PathLike[str] | None,
    split: str,
    queries: Any,
    verify: bool | None,
    **search_kw: Any,
) -> list[dict[str, Any]]:
    """:func:`index.items.search_items` with re-ranking: each result gets its ``score``.

    The query vectors are ``fq`` or, for a codes file's queries, the first rows of its
    ``split``'s float vectors of the same kind and width as the database's."""
    from index.items import search_items

    rows = open_floats(meta, bundle, rerank, items.ids, verify)
    try:
        if fq is None and codes is not None:
            fq = query_floats(codes, split, len(xq), rerank, rows.dim)
        if fq is None:
            raise FghashError(
                "re-ranking needs the queries' float vectors too (fq), one row per query."
            )
        fq = np.asarray(fq, dtype=np.float32)
        if fq.ndim != 2 or fq.shape != (len(xq), rows.dim):
            raise FghashError(
                f"the query float vectors are {list(fq.shape)} but re-ranking needs "
                f"[{len(xq)}, {rows.dim}] ({rows.kind} vectors, one row per query)."
            )
        ranked = Reranked(index, rows, fq, oversample, metric)
        return ranked.add_scores(search_items(ranked, items, xq, k, queries=queries, **search_kw))
    finally:
        rows.close()


def floats_of_codes(path: str | os.PathLike[str], split: str) -> dict[str, Any] | None:
    """``{"kind", "dim"}`` of the float vectors a codes file's ``split`` stores, or None:
    what ``index.json`` records as ``codes.floats`` when a bundle is built."""
    from fghash.codes import read_attrs

    feats = read_attrs(path)["splits"].get(split, {}).get("features")
    return {"kind": str(feats["kind"]), "dim": int(feats["dim"])} if feats else None
