"""Speed, size and accuracy of every index configuration, and of exact float search.

One row per (index kind, search parameter): binary ``flat``; ``ivf`` over an ``nprobe``
sweep; ``hnsw`` over ``efSearch``; ``hash``/``multihash`` over ``nflip``; and the exact
float baseline, FAISS ``IndexFlatIP``/``IndexFlatL2`` over the codes file's
``features``. GPU rows (binary flat, float flat) are added when FAISS has GPU support
and a GPU is visible. Each row holds:

* ``build_s`` – one build (train + add); ``index_bytes`` and ``bytes_per_item`` – the
  serialized FAISS index (a GPU index is measured through its CPU copy);
* ``qps`` – the whole query set in one batch, median of ``runs`` after ``warmup``;
* ``latency_p50_ms``/``latency_p99_ms`` – one query per call over the first
  ``latency_queries`` queries (after one warm-up pass over a few queries);
* ``accuracy`` – of exactly what that configuration returned: ``knn-recall@k`` against
  the exact binary k nearest neighbours, ties counted (binary rows), and, with labels,
  ``map@k`` and ``precision@k`` of the returned list in the returned order.

The raw FAISS object is timed (queries padded beforehand), not fghash's Python wrapper,
so rows measure the index. Every row runs with the same FAISS thread count
(``faiss.omp_set_num_threads``), recorded in the result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np

from bench.timing import RepeatTimer, percentiles_ms
from fghash.errors import FghashError
from fghash.eval.metrics import ap_of_ranked, knn_recall, kth_distance
from fghash.eval.ranking import pair_distances, rank_hamming

__all__ = [
    "DEFAULT_SWEEPS",
    "FLOAT_METRICS",
    "returned_relevance",
    "measure_binary",
    "measure_float",
    "run_throughput",
    "timed_search",
    "accuracy",
]

logger = logging.getLogger(__name__)

#: Search parameter swept for each binary index kind, and its values.
DEFAULT_SWEEPS: dict[str, tuple[str | None, tuple[int, ...]]] = {
    "flat": (None, (0,)),
    "ivf": ("nprobe", (1, 2, 4, 8, 16, 32, 64)),
    "hnsw": ("ef_search", (16, 32, 64, 128, 256)),
    "hash": ("nflip", (0, 1, 2, 3)),
    "multihash": ("nflip", (0, 1, 2)),
}
FLOAT_METRICS = ("ip", "l2")
_GPU_MAX_K = 2048
_MIN_LATENCY_QUERIES = 20  # single queries timed at least, whatever max_seconds says
_HNSW_FIRST_ADD = 10_000  # items in the first HNSW batch when building within a budget
_float_gpu_resources: Any = None


def returned_relevance(qlabels: np.ndarray, dblabels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Relevance ``bool [nq, k]`` of returned database positions (``-1``: not relevant)."""
    ids = np.asarray(ids)
    valid = ids >= 0
    got = np.asarray(dblabels)[np.where(valid, ids, 0)]
    ql = np.asarray(qlabels)
    if ql.ndim == 1:
        rel = got == ql[:, None]
    else:
        rel = (got.astype(bool) & ql.astype(bool)[:, None, :]).any(axis=2)
    return rel & valid


def accuracy(
    ids: np.ndarray,
    ks: Sequence[int],
    n_db: int,
    *,
    qlabels: np.ndarray | None,
    dblabels: np.ndarray | None,
    run_dist: np.ndarray | None = None,
    kth: Mapping[int, np.ndarray] | None = None,
) -> dict[str, float]:
    acc: dict[str, float] = {}
    for k in ks:
        kk = min(k, n_db)
        if run_dist is not None and kth is not None:
            acc[f"knn-recall@{k}"] = float(np.mean(knn_recall(kth[k], run_dist, k, n_db)))
        if qlabels is not None and dblabels is not None:
            rel = returned_relevance(qlabels, dblabels, ids[:, :kk])
            acc[f"map@{k}"] = float(np.mean(ap_of_ranked(rel)))
            acc[f"precision@{k}"] = float(np.mean(rel.sum(axis=1) / kk))
    return acc


def timed_search(
    search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    xq: np.ndarray,
    k: int,
    *,
    runs: int,
    warmup: int,
    latency_queries: int,
    max_seconds: float | None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Batch timing (median of runs) and single-query latencies of ``search``."""
    timer = RepeatTimer(warmup=warmup, runs=runs, max_seconds=max_seconds)
    ids = None
    for _ in timer:
        _, ids = search(xq, k)
    nlat = min(int(latency_queries), xq.shape[0])
    lat: list[float] = []
    if nlat:
        for i in range(min(nlat, 10) if warmup else 0):
            search(xq[i : i + 1], k)
        for i in range(nlat):
            t0 = time.perf_counter()
            search(xq[i : i + 1], k)
            lat.append(time.perf_counter() - t0)
            if (
                max_seconds is not None
                and len(lat) >= _MIN_LATENCY_QUERIES
                and sum(lat) > max_seconds
            ):
                break
    nlat = len(lat)
    pct = percentiles_ms(lat) if lat else {"p50": None, "p99": None}
    row = {
        "k": k,
        "batch": timer.summary(),
        "qps": xq.shape[0] / timer.median,
        "latency_p50_ms": pct["p50"],
        "latency_p99_ms": pct["p99"],
        "latency_queries": nlat,
    }
    return row, ids


class _Params:
    """Set one search-time parameter on a FAISS binary index, restoring it afterwards."""

    def __init__(self, fi: Any, name: str | None, value: int) -> None:
        self.fi, self.name, self.value, self.old = fi, name, value, None

    def _target(self) -> tuple[Any, str]:
        return (self.fi.hnsw, "efSearch") if self.name == "ef_search" else (self.fi, self.name)

    def __enter__(self) -> _Params:
        if self.name is not None:
            obj, attr = self._target()
            self.old = getattr(obj, attr)
            setattr(obj, attr, int(self.value))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.name is not None:
            obj, attr = self._target()
            setattr(obj, attr, self.old)


def measure_binary(
    xb: np.ndarray,
    xq: np.ndarray,
    bits: int,
    kinds: Iterable[str],
    ks: Sequence[int],
    *,
    exact_counts: np.ndarray,
    qlabels: np.ndarray | None = None,
    dblabels: np.ndarray | None = None,
    sweeps: Mapping[str, tuple[str | None, Sequence[int]]] = DEFAULT_SWEEPS,
    runs: int = 5,
    warmup: int = 1,
    latency_queries: int = 200,
    max_seconds: float | None = 30.0,
    gpu: bool = False,
    progress: bool | None = None,
    hnsw_budget_s: float | None = None,
    phase: Callable[[str], AbstractContextManager[Any]] | None = None,
) -> list[dict[str, Any]]:
    """Rows for binary indexes over packed codes ``xb`` (database) and ``xq`` (queries).

    ``exact_counts`` are the exact per-distance counts ``n[q, d]`` of every query
    (:func:`fghash.eval.ranking.rank_hamming`); they give the exact k-th distance for the
    tie-aware k-NN recall without trusting any index.

    ``hnsw_budget_s``: HNSW is built by adding the database in growing batches, in
    order, and stops before a batch that would end past this many seconds; its rows then
    cover the first ``M`` items only (``row["sample"]``), their accuracy measured against
    exact search over those ``M`` items. ``phase(name)`` wraps each kind's build and sweep
    (``"index <kind>"``, :class:`bench.progress.Phases`).
    """
    from tqdm.auto import tqdm

    phase = phase or (lambda name: nullcontext())
    n_db = xb.shape[0]
    k_search = min(max(ks), n_db)
    kth = {k: kth_distance(exact_counts, k) for k in ks}
    plan: list[tuple[str, str]] = [(kind, "cpu") for kind in kinds]
    if gpu:
        plan.append(("flat", "gpu"))
    rows: list[dict[str, Any]] = []
    bar = tqdm(
        total=sum(len(sweeps[k][1]) for k, _ in plan),
        desc="index sweep",
        unit="config",
        disable=None if progress is None else not progress,
    )
    try:
        for kind, device in plan:
            with phase(f"index {kind}" + (" gpu" if device == "gpu" else "")):
                rows += _sweep_kind(
                    kind,
                    device,
                    xb,
                    xq,
                    bits,
                    ks,
                    k_search,
                    kth,
                    sweeps,
                    bar,
                    qlabels=qlabels,
                    dblabels=dblabels,
                    hnsw_budget_s=hnsw_budget_s,
                    runs=runs,
                    warmup=warmup,
                    latency_queries=latency_queries,
                    max_seconds=max_seconds,
                )
    finally:
        bar.close()
    return rows


def _build_hnsw_within(xb: np.ndarray, bits: int, budget_s: float) -> tuple[Any, int]:
    """HNSW over the longest prefix of ``xb`` added in about ``budget_s`` seconds."""
    from index import build_index, pad_codes

    t0 = time.perf_counter()
    done = min(len(xb), _HNSW_FIRST_ADD)
    bi = build_index(xb[:done], bits, "hnsw", device="cpu")
    while done < len(xb):
        spent = time.perf_counter() - t0
        nxt = min(len(xb), 2 * done)
        # insertion slows a little as the graph grows: allow 20% over the rate so far
        if spent + 1.2 * spent / done * (nxt - done) > budget_s:
            break
        bi.faiss_index.add(pad_codes(xb[done:nxt], bits, bi.dim))
        done = nxt
    return bi, done


def _build_kind(
    kind: str, device: str, xb: np.ndarray, bits: int, hnsw_budget_s: float | None
) -> tuple[Any, float, dict[str, Any] | None]:
    """Build one index kind: the index, its build seconds, and ``{"items", "of",
    "build_budget_s"}`` when HNSW's budget let it hold only a prefix of ``xb`` (else None)."""
    from index import build_index

    t0 = time.perf_counter()
    sample = None
    if kind == "hnsw" and hnsw_budget_s is not None and device == "cpu":
        bi, m = _build_hnsw_within(xb, bits, hnsw_budget_s)
        if m < xb.shape[0]:
            sample = {"items": m, "of": xb.shape[0], "build_budget_s": hnsw_budget_s}
    else:
        bi = build_index(xb, bits, kind, device=device)
    return bi, time.perf_counter() - t0, sample


def _sweep_kind(
    kind: str,
    device: str,
    xb: np.ndarray,
    xq: np.ndarray,
    bits: int,
    ks: Sequence[int],
    k_search: int,
    kth: Mapping[int, np.ndarray],
    sweeps: Mapping[str, tuple[str | None, Sequence[int]]],
    bar: Any,
    *,
    qlabels: np.ndarray | None,
    dblabels: np.ndarray | None,
    hnsw_budget_s: float | None,
    **timing_kw: Any,
) -> list[dict[str, Any]]:
    """Build one index kind and time it over its sweep: its rows."""
    import faiss

    from index import pad_codes

    bar.set_postfix_str(f"{kind} build")
    try:
        bi, build_s, sample = _build_kind(kind, device, xb, bits, hnsw_budget_s)
    except FghashError as e:
        # build-index's advice (--type, --nlist) is not bench's: give bench's own
        why = f"{str(e).split('; use ')[0]}; leave {kind} out of --index-types."
        logger.warning("skipping %s index: %s", kind, why)
        bar.update(len(sweeps[kind][1]))
        return [{"backend": "binary", "kind": kind, "device": device, "skipped": why}]
    n_db = xb.shape[0]
    if sample is not None:  # accuracy against exact search over the same items
        xb, n_db = xb[: sample["items"]], sample["items"]
        dblabels = dblabels[:n_db] if dblabels is not None else None
        counts = rank_hamming(xq, xb, bits, stable=False, progress=False).n
        kth = {k: kth_distance(counts, k) for k in ks}
        k_search = min(k_search, n_db)
    nbytes = int(faiss.serialize_index_binary(bi.cpu_index()).size)
    qpad = pad_codes(xq, bits, bi.dim)
    k = min(k_search, _GPU_MAX_K) if device == "gpu" else k_search
    pname, values = sweeps[kind]
    rows: list[dict[str, Any]] = []
    for v in values:
        if pname == "nprobe" and v > bi.params.get("nlist", v):
            bar.update(1)
            continue
        bar.set_postfix_str(f"{kind} {pname or ''}={v if pname else ''}".strip())
        with _Params(bi.faiss_index, pname, v):
            timing, ids = timed_search(bi.faiss_index.search, qpad, k, **timing_kw)
        row = {
            "backend": "binary",
            "kind": kind,
            "device": device,
            "params": {**bi.params, **({pname: v} if pname else {})},
            "sweep": {pname: v} if pname else {},
            "build_s": build_s,
            "index_bytes": nbytes,
            "bytes_per_item": nbytes / n_db,
            **({"sample": sample} if sample else {}),
            **timing,
            "accuracy": accuracy(
                ids,
                [kk for kk in ks if kk <= k] or [k],
                n_db,
                qlabels=qlabels,
                dblabels=dblabels,
                run_dist=pair_distances(xq, xb, ids),
                kth=kth,
            ),
        }
        rows.append(row)
        logger.info("%s %s %s: %.0f QPS", kind, device, row["sweep"], row["qps"])
        bar.update(1)
    return rows


def _float_gpu(index: Any) -> Any:
    global _float_gpu_resources
    import faiss

    if _float_gpu_resources is None:
        _float_gpu_resources = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(_float_gpu_resources, 0, index)


def measure_float(
    fb: np.ndarray,
    fq: np.ndarray,
    ks: Sequence[int],
    *,
    qlabels: np.ndarray | None = None,
    dblabels: np.ndarray | None = None,
    metrics: Iterable[str] = FLOAT_METRICS,
    runs: int = 5,
    warmup: int = 1,
    latency_queries: int = 200,
    max_seconds: float | None = 30.0,
    gpu: bool = False,
    phase: Callable[[str], AbstractContextManager[Any]] | None = None,
) -> list[dict[str, Any]]:
    """Rows for exact float search (``IndexFlatIP``/``IndexFlatL2``) over features.

    On CPU the search is FAISS's ``knn`` on the features array itself, the function
    ``IndexFlatIP``/``IndexFlatL2.search`` call on their own copy: the same results and
    time, without a second copy of the features (at a million 256-d items, 1 GB).
    ``index_bytes`` is what that index would serialize to. ``phase("float search")``
    wraps all rows.
    """

    phase = phase or (lambda name: nullcontext())

    fb = np.ascontiguousarray(fb, dtype=np.float32)
    fq = np.ascontiguousarray(fq, dtype=np.float32)
    if fb.shape[1] != fq.shape[1]:
        raise FghashError(
            f"query features have {fq.shape[1]} dimensions but database features have {fb.shape[1]}."
        )
    n_db, d = fb.shape
    k_search = min(max(ks), n_db)
    rows = []
    with phase("float search"):
        for metric in metrics:
            for device in ("cpu", "gpu") if gpu else ("cpu",):
                rows.append(
                    _float_row(
                        fb,
                        fq,
                        ks,
                        metric,
                        device,
                        k_search,
                        qlabels=qlabels,
                        dblabels=dblabels,
                        runs=runs,
                        warmup=warmup,
                        latency_queries=latency_queries,
                        max_seconds=max_seconds,
                    )
                )
    return rows


def _float_row(
    fb: np.ndarray,
    fq: np.ndarray,
    ks: Sequence[int],
    metric: str,
    device: str,
    k_search: int,
    *,
    qlabels: np.ndarray | None,
    dblabels: np.ndarray | None,
    **timing_kw: Any,
) -> dict[str, Any]:
    import faiss

    n_db, d = fb.shape
    t0 = time.perf_counter()
    fi = faiss.IndexFlatIP(d) if metric == "ip" else faiss.IndexFlatL2(d)
    nbytes = int(faiss.serialize_index(fi).size) + fb.nbytes
    if device == "gpu":
        fi.add(fb)
        fi = _float_gpu(fi)
        search = fi.search
    else:
        kind = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2

        def search(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            return faiss.knn(x, fb, k, metric=kind)

    build_s = time.perf_counter() - t0
    k = min(k_search, _GPU_MAX_K) if device == "gpu" else k_search
    timing, ids = timed_search(search, fq, k, **timing_kw)
    return {
        "backend": "float",
        "kind": f"float-{metric}",
        "device": device,
        "params": {"metric": metric, "dim": d},
        "sweep": {},
        "build_s": build_s,
        "index_bytes": nbytes,
        "bytes_per_item": nbytes / n_db,
        **timing,
        "accuracy": accuracy(
            ids, [kk for kk in ks if kk <= k] or [k], n_db, qlabels=qlabels, dblabels=dblabels
        ),
    }


def run_throughput(
    xb: np.ndarray,
    xq: np.ndarray,
    bits: int,
    ks: Sequence[int],
    *,
    exact_counts: np.ndarray,
    kinds: Iterable[str] = tuple(DEFAULT_SWEEPS),
    qlabels: np.ndarray | None = None,
    dblabels: np.ndarray | None = None,
    fb: np.ndarray | None = None,
    fq: np.ndarray | None = None,
    threads: int | None = None,
    runs: int = 5,
    warmup: int = 1,
    latency_queries: int = 200,
    max_seconds: float | None = 30.0,
    device: str = "auto",
    progress: bool | None = None,
    hnsw_budget_s: float | None = None,
    phase: Callable[[str], AbstractContextManager[Any]] | None = None,
) -> dict[str, Any]:
    """All rows (binary sweeps, then float baselines when features are given).

    ``hnsw_budget_s`` and ``phase``: see :func:`measure_binary` and :func:`measure_float`.

    ``device``: ``"cpu"`` never adds GPU rows; ``"auto"`` adds them when FAISS has GPU
    support and a GPU is visible; ``"gpu"`` requires that. Returns ``{"threads",
    "gpu", "rows"}``.
    """
    import faiss

    from index import resolve_device
    from index.gpu import gpu_available

    if device == "cpu":
        gpu = False
    elif device == "auto":
        gpu = gpu_available()
    else:
        gpu = resolve_device(device) == "gpu"
    if threads is not None:
        faiss.omp_set_num_threads(int(threads))
    used = int(faiss.omp_get_max_threads())
    common = dict(
        runs=runs,
        warmup=warmup,
        latency_queries=latency_queries,
        max_seconds=max_seconds,
        gpu=gpu,
        phase=phase,
    )
    rows = measure_binary(
        xb,
        xq,
        bits,
        kinds,
        ks,
        exact_counts=exact_counts,
        qlabels=qlabels,
        dblabels=dblabels,
        progress=progress,
        hnsw_budget_s=hnsw_budget_s,
        **common,
    )
    if fb is not None and fq is not None:
        rows += measure_float(fb, fq, ks, qlabels=qlabels, dblabels=dblabels, **common)
    return {"threads": used, "gpu": gpu, "rows": rows}
