"""``fghash tune``: choose a binary index by measuring every kind on the user's codes.

What is measured
----------------
On ``S`` items of the database (all of them up to ``sample``, else a seeded random
sample) every kind of :data:`index.binary.KINDS` is built with
:func:`index.binary.build_index` over a grid of build parameters, and searched over a
grid of search parameters (``nprobe``, ``ef_search``, ``nflip``, as
:meth:`index.binary.BinaryIndex.search` takes them); FAISS's GPU flat index and the
tensor engine (:mod:`index.tensor`) join when a GPU is there. Each point records:

* **recall@k, tie-aware**: the share of the ``nq·k`` result slots whose Hamming
  distance (recomputed from the codes, not taken from the index) is at most the true
  ``k``-th distance of its query, as ann-benchmarks and big-ann-benchmarks count; the
  true distances come from the exact flat index. Missing slots (``I = -1``) count as
  misses.
* **QPS and ms**: queries per second on **one thread** (``faiss.omp_set_num_threads(1)``),
  the tuning queries searched in one batch, best of up to 3 repeats; ``ms = 1000 / QPS``
  is the mean time one query takes on one thread, which is what ``max_ms`` bounds.
  GPU points are timed on their device, batch as well.
* **memory**: bytes of ``faiss.serialize_index_binary`` (what ``index.faiss`` holds;
  FAISS keeps the same arrays in memory), scaled by ``N / S`` when the database was
  sampled; GPU points: the codes held on the device.
* **build time** on all usable cores (:func:`fghash.util.threads.default_threads`).

Grids grow from cheap to dear and stop early: a search parameter stops growing once
recall reaches 1 or the point got slower than the flat index (flat is exact, smaller
and built sooner, so every point beyond is dominated), and nothing new starts once the
time budget is spent (a note says what was left out).

The pick
--------
*Cheapest* is **fewest bytes**: the constraints (``min_recall``, ``max_memory``,
``max_ms``) say what is good enough, and memory is what an index costs to keep; among
equal bytes the highest QPS, then the shortest build, then the best recall. Flat stores
nothing but the codes, so it is picked whenever it is fast enough: at ``N ≤ 100k`` one
flat query scans at most 100k codes, about 0.15 ms on one core, well under the default
1 ms, and that measurement (not a shortcut) makes flat the pick there. The pick is never
dominated on (recall, QPS, memory, build time): a point that dominated it would meet
every constraint too and sort first. The cheapest point is then checked on separate
held-out queries; when it misses a constraint there the next one is checked (and a
note says so).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fghash.errors import FghashError
from index.binary import MIN_POINTS_PER_CENTROID, build_index

__all__ = [
    "Constraints",
    "Point",
    "TuneResult",
    "dominates",
    "hamming_rows",
    "human_bytes",
    "pareto_points",
    "pick_point",
    "tie_aware_recall",
    "tune",
]

logger = logging.getLogger(__name__)

_MIN_TIME_S = 0.2  # repeat a timing until this much was measured (at most _REPEATS runs)
_REPEATS = 3
_HNSW_M = (16, 32)
_EF_SEARCH = (16, 32, 64, 128, 256, 512)
_IVF_FACTORS = (0.25, 0.5, 1.0, 2.0)  # nlist = factor * sqrt(S)
_MULTIHASH_TABLES = (2, 4, 8)
_FULL_RECALL = 1.0 - 1e-9


@dataclass(frozen=True)
class Constraints:
    """What the chosen index must achieve."""

    k: int = 10  # neighbours per query
    min_recall: float = 0.95  # tie-aware recall@k, 0..1
    max_memory: int | None = None  # bytes for the whole database; None: no limit
    max_ms: float | None = 1.0  # mean ms per query on one thread; None: no limit

    def misses(self, recall: float, memory: int, ms: float) -> list[str]:
        """The constraints these figures miss, as phrases (empty: all met)."""
        out = []
        if recall < self.min_recall:
            out.append(f"recall {recall:.3f} < {self.min_recall}")
        if self.max_memory is not None and memory > self.max_memory:
            out.append(f"memory {memory} B > {self.max_memory} B")
        if self.max_ms is not None and ms > self.max_ms:
            out.append(f"{ms:.3g} ms > {self.max_ms} ms")
        return out


@dataclass
class Point:
    """One measured configuration."""

    kind: str  # flat, ivf, hnsw, hash, multihash
    build: dict[str, int]  # build parameters (nlist, hnsw_m, hash_b, nhash)
    search: dict[str, int]  # search parameters (nprobe, ef_search, nflip)
    recall: float
    qps: float
    memory: int  # bytes for the whole database
    build_s: float
    device: str = "cpu"
    engine: str = "faiss"  # or "tensor"
    feasible: bool = False
    pareto: bool = False

    @property
    def ms(self) -> float:
        """Mean milliseconds per query (one thread on CPU)."""
        return 1000.0 / self.qps if self.qps > 0 else math.inf

    @property
    def label(self) -> str:
        """``kind(params)`` as the table and the plot name it."""
        params = {**self.build, **self.search}
        where = "" if self.device == "cpu" else f"@{self.device}"
        eng = "" if self.engine == "faiss" else f"[{self.engine}]"
        inner = ",".join(f"{k}={v}" for k, v in params.items())
        return f"{self.kind}{eng}{where}({inner})"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with ``ms`` and ``label``."""
        return {**asdict(self), "ms": self.ms, "label": self.label}


@dataclass
class TuneResult:
    """Everything :func:`tune` measured and chose."""

    points: list[Point]
    pick: Point | None
    heldout: dict[str, float] | None  # the pick on held-out queries: recall, qps, ms
    why: str  # one sentence
    constraints: Constraints
    n: int  # database items
    sample: int  # items measured
    bits: int
    queries: tuple[int, int]  # tuning, held-out
    seed: int
    elapsed_s: float
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "pick": None if self.pick is None else self.pick.as_dict(),
            "heldout": self.heldout,
            "why": self.why,
            "constraints": asdict(self.constraints),
            "n": self.n,
            "sample": self.sample,
            "bits": self.bits,
            "queries": list(self.queries),
            "seed": self.seed,
            "elapsed_s": self.elapsed_s,
            "notes": list(self.notes),
            "timing": "QPS on one thread, queries in one batch; ms = 1000 / QPS",
            "memory": "bytes of faiss.serialize_index_binary, scaled by N / sample",
            "points": [p.as_dict() for p in self.points],
        }


def hamming_rows(xq: np.ndarray, xb: np.ndarray, I: np.ndarray) -> np.ndarray:
    """Hamming distances of each query to the database rows ``I`` picks (``-1``: -1)."""
    safe = np.where(I >= 0, I, 0)
    x = np.bitwise_xor(xq[:, None, :], xb[safe])
    d = np.unpackbits(x, axis=-1).sum(axis=-1).astype(np.int64)
    return np.where(I >= 0, d, -1)


def tie_aware_recall(xq: np.ndarray, xb: np.ndarray, I: np.ndarray, kth: np.ndarray) -> float:
    """Share of the ``nq·k`` slots of ``I`` holding an item no farther than its query's
    true ``k``-th distance ``kth`` (missing slots count as misses); distances are
    recomputed from the codes."""
    I = np.asarray(I)
    if I.size == 0:
        return 1.0
    d = hamming_rows(xq, xb, I)
    hit = (I >= 0) & (d <= np.asarray(kth)[:, None])
    return float(hit.sum()) / float(I.size)


def dominates(a: Point, b: Point) -> bool:
    """``a`` is at least as good as ``b`` on recall, QPS, memory and build time, and
    better on one."""
    ge = (a.recall >= b.recall, a.qps >= b.qps, a.memory <= b.memory, a.build_s <= b.build_s)
    gt = (a.recall > b.recall, a.qps > b.qps, a.memory < b.memory, a.build_s < b.build_s)
    return all(ge) and any(gt)


def pareto_points(points: list[Point]) -> list[Point]:
    """The points no other point dominates (marks ``pareto`` on each)."""
    for p in points:
        p.pareto = not any(dominates(q, p) for q in points if q is not p)
    return [p for p in points if p.pareto]


def _cost(p: Point) -> tuple[float, ...]:
    """Sort key of :func:`pick_point`: fewest bytes, then fastest, shortest build, best recall."""
    return (p.memory, -p.qps, p.build_s, -p.recall)


def pick_point(points: list[Point], c: Constraints) -> list[Point]:
    """The points that meet every constraint, cheapest first (marks ``feasible``)."""
    for p in points:
        p.feasible = not c.misses(p.recall, p.memory, p.ms)
    return sorted((p for p in points if p.feasible), key=_cost)


class _Clock:
    """The time budget: ``left()`` seconds remain; notes what was skipped."""

    def __init__(self, budget: float | None) -> None:
        self.start = time.perf_counter()
        self.budget = budget
        self.skipped: list[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return math.inf if self.budget is None else self.budget - self.elapsed()

    def allows(self, what: str, cost: float = 0.0) -> bool:
        """True when ``cost`` more seconds fit; else remember ``what`` as skipped."""
        if self.left() > cost:
            return True
        self.skipped.append(what)
        return False


def _faiss_threads(n: int) -> int:
    """Set FAISS's OpenMP threads to ``n``; returns the previous count."""
    import faiss

    before = int(faiss.omp_get_max_threads())
    faiss.omp_set_num_threads(int(n))
    return before


def _timed(search: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``search`` until :data:`_MIN_TIME_S` was measured (at most :data:`_REPEATS`
    times); its result and the best time."""
    best, spent, out = math.inf, 0.0, None
    for _ in range(_REPEATS):
        t = time.perf_counter()
        out = search()
        dt = time.perf_counter() - t
        best, spent = min(best, dt), spent + dt
        if spent >= _MIN_TIME_S:
            break
    return out, best


def _index_bytes(bi: Any) -> int:
    import faiss

    return int(faiss.serialize_index_binary(bi.cpu_index()).size)


class _Bench:
    """Measures points of one database sample against the flat index's truth, on the
    tuning queries ``xq`` (which choose) and the held-out queries ``xh`` (which check)."""

    def __init__(
        self,
        xb: np.ndarray,
        xq: np.ndarray,
        xh: np.ndarray,
        bits: int,
        k: int,
        scale: float,
        clock: _Clock,
    ) -> None:
        self.xb, self.xq, self.xh, self.bits, self.k = xb, xq, xh, bits, k
        self.scale, self.clock = scale, clock
        self.points: list[Point] = []
        self.heldout: dict[int, dict[str, float]] = {}  # id(point) -> its held-out figures
        self.kth: tuple[np.ndarray, np.ndarray] | None = None
        self.flat_qps = 0.0

    def _run(
        self, index: Any, xq: np.ndarray, kth: np.ndarray, search: dict
    ) -> tuple[float, float]:
        (_, I), dt = _timed(lambda: index.search(xq, self.k, **search))
        return tie_aware_recall(xq, self.xb, I, kth), xq.shape[0] / max(dt, 1e-9)

    def measure(
        self,
        index: Any,
        kind: str,
        build: dict,
        build_s: float,
        memory: int,
        search: dict,
        **where: str,
    ) -> Point:
        """Search both query sets with ``search`` parameters and record the point."""
        assert self.kth is not None
        recall, qps = self._run(index, self.xq, self.kth[0], search)
        p = Point(kind, dict(build), dict(search), recall, qps, memory, build_s, **where)
        h_recall, h_qps = self._run(index, self.xh, self.kth[1], search)
        self.heldout[id(p)] = {"recall": h_recall, "qps": h_qps, "ms": 1000.0 / h_qps}
        self.points.append(p)
        logger.debug("tune: %s recall %.4f, %.0f QPS", p.label, p.recall, p.qps)
        return p

    def build(self, kind: str, **kw: Any) -> tuple[Any, float, int]:
        t = time.perf_counter()
        bi = build_index(self.xb, self.bits, kind, device="cpu", **kw)
        build_s = time.perf_counter() - t
        return bi, build_s, int(_index_bytes(bi) * self.scale)

    def flat(self) -> None:
        """The exact flat index: the truth for both query sets, and the first point."""
        bi, build_s, memory = self.build("flat")
        kth = []
        for xq in (self.xq, self.xh):
            _, I = bi.search(xq, self.k)
            kth.append(hamming_rows(xq, self.xb, I)[:, -1])
        self.kth = (kth[0], kth[1])
        prev = _faiss_threads(1)
        try:
            self.flat_qps = self.measure(bi, "flat", {}, build_s, memory, {}).qps
        finally:
            _faiss_threads(prev)

    def sweep(
        self,
        index: Any,
        kind: str,
        build: dict,
        build_s: float,
        memory: int,
        name: str,
        values: list[int],
    ) -> None:
        """Grow one search parameter while it can still give an undominated point."""
        prev = _faiss_threads(1)
        try:
            for v in values:
                if not self.clock.allows(f"{kind}({_fmt(build)}) {name}>={v}"):
                    return
                p = self.measure(index, kind, build, build_s, memory, {name: v})
                if p.recall >= _FULL_RECALL or p.qps < self.flat_qps:
                    return
        finally:
            _faiss_threads(prev)


def _fmt(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _powers(top: int, start: int = 1) -> list[int]:
    vals, v = [], start
    while v < top:
        vals.append(v)
        v *= 2
    return [*vals, top]


def _ivf_grid(s: int) -> list[int]:
    cap = s // MIN_POINTS_PER_CENTROID
    return sorted({max(1, min(cap, round(f * math.sqrt(s)))) for f in _IVF_FACTORS if cap >= 1})


def _hash_grid(bits: int, s: int) -> list[int]:
    lg = math.ceil(math.log2(max(s, 2)))
    return sorted({b for b in (lg - 4, lg, lg + 4) if 1 <= b <= min(64, bits)})


def _multihash_grid(bits: int) -> list[tuple[int, int]]:
    out = []
    for nh in _MULTIHASH_TABLES:
        b = bits // nh
        if 1 <= b <= 64 and nh <= bits:
            out.append((b, nh))
    return out


def _grids(bench: _Bench, bits: int, s: int) -> Iterator[tuple[str, dict, str, list[int]]]:
    """``(kind, build params, search parameter, its values)``, cheapest builds first."""
    for b in _hash_grid(bits, s):
        yield "hash", {"hash_b": b}, "nflip", list(range(0, min(b, 8) + 1))
    for b, nh in _multihash_grid(bits):
        yield "multihash", {"hash_b": b, "nhash": nh}, "nflip", list(range(0, min(b, 8) + 1))
    for nlist in _ivf_grid(s):
        yield "ivf", {"nlist": nlist}, "nprobe", _powers(nlist)
    for m in _HNSW_M:
        yield "hnsw", {"hnsw_m": m}, "ef_search", list(_EF_SEARCH)


def _estimate_build(kind: str, build: dict, done: dict[str, tuple[dict, float]]) -> float:
    """Seconds a build should take, from the last build of that kind (0 when none)."""
    if kind not in done:
        return 0.0
    prev, secs = done[kind]
    if kind == "ivf":
        return secs * build["nlist"] / max(1, prev["nlist"])
    if kind == "hnsw":
        return secs * build["hnsw_m"] / max(1, prev["hnsw_m"])
    return secs


def _measure_all(bench: _Bench, bits: int, s: int) -> None:
    """Every grid point the budget allows."""
    done: dict[str, tuple[dict, float]] = {}
    for kind, build, name, values in _grids(bench, bits, s):
        what = f"{kind}({_fmt(build)})"
        if not bench.clock.allows(what, _estimate_build(kind, build, done)):
            continue
        try:
            bi, build_s, memory = bench.build(kind, **build)
        except FghashError as e:  # a grid point this database cannot hold
            logger.info("tune: %s skipped: %s", what, e)
            continue
        done[kind] = (build, build_s)
        bench.sweep(bi, kind, build, build_s, memory, name, values)
        del bi


def _measure_gpu(bench: _Bench) -> None:
    """FAISS's GPU flat index and the tensor engine, when a GPU is there."""
    from index.gpu import gpu_available

    if gpu_available() and bench.clock.allows("flat@gpu"):
        t = time.perf_counter()
        bi = build_index(bench.xb, bench.bits, "flat", device="gpu")
        build_s = time.perf_counter() - t
        memory = int(bench.xb.nbytes * bench.scale)
        if bench.k <= 2048:
            bench.measure(bi, "flat", {}, build_s, memory, {}, device="gpu")
    if _torch_cuda() and bench.clock.allows("flat[tensor]@gpu"):
        from index.tensor import TensorIndex

        t = time.perf_counter()
        ti = TensorIndex(bench.xb, bench.bits, device="gpu")
        build_s = time.perf_counter() - t
        op = ti._xb  # the database operand the engine keeps on the device
        memory = int(op.element_size() * op.numel() * bench.scale)
        bench.measure(ti, "flat", {}, build_s, memory, {}, device="gpu", engine="tensor")


def _torch_cuda() -> bool:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _choose(bench: _Bench, c: Constraints) -> tuple[Point | None, dict | None, list[str]]:
    """The cheapest point that also meets every constraint on the held-out queries."""
    notes = []
    for p in pick_point(bench.points, c):
        h = bench.heldout[id(p)]
        missed = c.misses(h["recall"], p.memory, h["ms"])
        if not missed:
            return p, h, notes
        notes.append(
            f"{p.label} met every constraint on the tuning queries but not on the "
            f"held-out ones ({'; '.join(missed)}); the next cheapest was checked."
        )
    return None, None, notes


def _why(p: Point, c: Constraints, points: list[Point]) -> str:
    """One sentence: why this point."""
    flat = next((q for q in points if q.kind == "flat" and q.device == "cpu"), None)
    if p.kind == "flat" and p.device == "cpu":
        return (
            f"flat is exact and, at {p.ms:.3g} ms a query on one thread, fast enough "
            f"(max {c.max_ms} ms); no index stores fewer bytes, so nothing beats it."
        )
    slower = (
        ""
        if flat is None
        else (
            f"flat takes {flat.ms:.3g} ms a query"
            + (f", over the {c.max_ms} ms allowed" if c.max_ms and flat.ms > c.max_ms else "")
        )
    )
    return (
        f"{p.label} is the smallest index ({human_bytes(p.memory)}) meeting recall@{c.k} >= "
        f"{c.min_recall} (it has {p.recall:.3f}) within {c.max_ms} ms a query "
        f"({p.ms:.3g} ms, {p.qps:.0f} QPS on one thread){'; ' + slower if slower else ''}."
    )


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def _impossible(points: list[Point], c: Constraints) -> str:
    """One sentence for constraints no measured point meets."""
    best = max(points, key=lambda p: (p.recall, p.qps)) if points else None
    limits = [f"recall@{c.k} >= {c.min_recall}"]
    if c.max_memory is not None:
        limits.append(f"memory <= {human_bytes(c.max_memory)}")
    if c.max_ms is not None:
        limits.append(f"<= {c.max_ms} ms a query")
    near = (
        ""
        if best is None
        else (
            f"; the closest was {best.label} (recall {best.recall:.3f}, {human_bytes(best.memory)}, "
            f"{best.ms:.3g} ms)"
        )
    )
    return (
        f"no measured index meets {', '.join(limits)} on both the tuning and the "
        f"held-out queries{near}; relax --min-recall, --max-memory or --max-ms."
    )


def tune(
    xb: np.ndarray,
    xq: np.ndarray,
    xh: np.ndarray,
    bits: int,
    constraints: Constraints,
    *,
    n_total: int | None = None,
    time_budget: float | None = 150.0,
    seed: int = 0,
    gpu: bool = True,
) -> TuneResult:
    """Measure every kind on database sample ``xb`` with tuning queries ``xq`` and
    held-out queries ``xh`` (packed codes), and choose (the module docstring).

    ``n_total``: items in the whole database (``xb`` is a sample of it; default: ``xb``'s
    rows). Raises :class:`FghashError` when ``k`` exceeds the sample.
    """
    clock = _Clock(time_budget)
    s = int(xb.shape[0])
    n = s if n_total is None else int(n_total)
    c = constraints
    if not 1 <= c.k <= s:
        raise FghashError(f"-k {c.k} must lie between 1 and the {s} items measured.")
    if not 0.0 <= c.min_recall <= 1.0:
        raise FghashError(f"--min-recall must lie between 0 and 1, got {c.min_recall}.")
    bench = _Bench(xb, xq, xh, bits, c.k, n / s, clock)
    bench.flat()
    _measure_all(bench, bits, s)
    if gpu:
        _measure_gpu(bench)
    pareto_points(bench.points)
    pick, held, notes = _choose(bench, c)
    if clock.skipped:
        notes.append(
            f"the time budget of {time_budget:g} s ran out; not measured: "
            f"{', '.join(clock.skipped[:6])}{' ...' if len(clock.skipped) > 6 else ''}."
        )
    if s < n:
        notes.append(
            f"measured on a random sample of {s} of the {n} items: memory is scaled "
            f"by {n / s:.3g}, nlist and nprobe likewise; QPS is the sample's."
        )
    why = _impossible(bench.points, c) if pick is None else _why(pick, c, bench.points)
    return TuneResult(
        bench.points,
        pick,
        held,
        why,
        c,
        n,
        s,
        bits,
        (int(xq.shape[0]), int(xh.shape[0])),
        seed,
        clock.elapsed(),
        notes,
    )
