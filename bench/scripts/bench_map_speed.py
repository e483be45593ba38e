"""Time tie-aware mAP@all and the @k metrics against a naive evaluator, side by side.

Sizes of the A²-Net protocol: Food-101 is 25,250 queries (test split) against 75,750
database items (train split), 101 classes; VegFru is 116,931 queries against 29,200
items, 292 classes; 48-bit codes. Codes here are random, so no two queries share a code
and no work is saved by de-duplication (trained codes repeat a lot, which makes real
files faster than this).

fghash: :func:`fghash.eval.ranking.rank_hamming` (per-distance counts) and
:func:`fghash.eval.metrics.summarize` (tie-aware mAP@all, mAP/P/R@k, precision within radius 2).
Naive, in the style of the authors' evaluation code: per query, XOR + popcount against
the whole database, ``np.argsort``, cumulative precision at the relevant items, and the
same @k figures from the sorted list. The naive loop costs the same for every query, so
it runs on the first ``--naive-queries`` queries and its time is scaled to the whole set
(``--naive-queries 0`` runs it on all). CPU seconds are the process's user + system time
(all threads); wall is elapsed time.

    python -m bench.scripts.bench_map_speed [--preset food101|vegfru] [--nq N] [--nb N] [--bits 48]
                                    [--device cpu|cuda]

``--device cuda`` counts with torch on the GPU (:func:`fghash.eval.ranking_torch.rank_hamming_torch`,
after a warm-up); the time then includes moving the codes there and the counts back.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from bench.machine import machine_info
from fghash.eval.metrics import average_precision, summarize
from fghash.eval.ranking import rank_hamming

__all__ = ["main", "naive_metrics"]

PRESETS = {
    "food101": {"nq": 25_250, "nb": 75_750, "classes": 101},
    "vegfru": {"nq": 116_931, "nb": 29_200, "classes": 292},
}
KS = (1, 10, 100)
_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return _BYTE_POPCOUNT[x.view(np.uint8)].reshape(*x.shape, x.itemsize).sum(axis=-1)


def naive_metrics(
    qcodes: np.ndarray,
    dbcodes: np.ndarray,
    qlabels: np.ndarray,
    dblabels: np.ndarray,
    ks: Sequence[int] = KS,
    *,
    onehot: bool = True,
) -> dict[str, float]:
    """mAP@all and mAP/P/R@k, one query at a time: XOR + popcount, argsort, cumsum.

    ``onehot=True`` finds the relevant items as the authors' ``CalcMap`` does, with a
    product of one-hot label rows (``gnd = queryL[i] @ retrievalL.T > 0``, which also
    serves multi-hot labels); ``onehot=False`` compares class ids instead (a leaner loop).
    Both sort once per query and read every @k figure from that sorted list.
    """
    words = -(-qcodes.shape[1] // 8)
    pad = ((0, 0), (0, 8 * words - qcodes.shape[1]))
    qw = np.pad(qcodes, pad).view(np.uint64)
    dbw = np.pad(dbcodes, pad).view(np.uint64)
    if onehot:
        classes = int(max(qlabels.max(), dblabels.max())) + 1
        q_hot = np.eye(classes, dtype=np.float32)[qlabels]
        db_hot_t = np.eye(classes, dtype=np.float32)[dblabels].T.copy()
    total = {"map@all": 0.0, **{f"{m}@{k}": 0.0 for m in ("map", "p", "r") for k in ks}}
    for i in range(len(qw)):
        gnd = q_hot[i] @ db_hot_t > 0 if onehot else dblabels == qlabels[i]
        dist = _popcount(dbw ^ qw[i]).sum(axis=1, dtype=np.int32)
        rel = gnd[np.argsort(dist)]
        hits = np.cumsum(rel)
        ranks = np.flatnonzero(rel) + 1
        prec = hits[ranks - 1] / ranks
        n_rel = len(ranks)
        if n_rel:
            total["map@all"] += prec.mean()
        for k in ks:
            inside = ranks <= k
            got = int(inside.sum())
            if got:
                total[f"map@{k}"] += prec[inside].mean()
            total[f"p@{k}"] += got / min(k, len(rel))
            total[f"r@{k}"] += got / n_rel if n_rel else 0.0
    return {key: v / max(len(qw), 1) for key, v in total.items()}


def _rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _random_codes(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    c = rng.integers(0, 256, (n, (bits + 7) // 8), dtype=np.uint8)
    if bits % 8:
        c[:, -1] &= (1 << (bits % 8)) - 1
    return c


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        prog="python -m bench.scripts.bench_map_speed", description=__doc__.splitlines()[0]
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="food101")
    p.add_argument("--nq", type=int, help="queries (default: the preset's)")
    p.add_argument("--nb", type=int, help="database items (default: the preset's)")
    p.add_argument("--classes", type=int, help="classes (default: the preset's)")
    p.add_argument("--bits", type=int, default=48)
    p.add_argument("--naive-queries", type=int, default=2000, help="0: all queries")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="cpu: numpy; cuda: torch"
    )
    a = p.parse_args(argv)
    size = {k: getattr(a, k) or v for k, v in PRESETS[a.preset].items()}
    rng = np.random.default_rng(a.seed)
    q = _random_codes(rng, size["nq"], a.bits)
    b = _random_codes(rng, size["nb"], a.bits)
    ql = rng.integers(0, size["classes"], size["nq"])
    bl = rng.integers(0, size["classes"], size["nb"])

    rank = rank_hamming
    if a.device != "cpu":
        from fghash.eval.ranking_torch import rank_hamming_torch

        rank = partial(rank_hamming_torch, device=a.device)
        rank(q[:64], b, a.bits, ql[:64], bl, stable=False)  # warm-up: CUDA context, kernels
    rss0 = _rss_mb()  # the peak below is what ranking and metrics add to this
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w0, c0 = _clock()
        st = rank(q, b, a.bits, ql, bl, stable=False, progress=False)
        w1, c1 = _clock()
        ours = summarize(st, KS, ("tie-aware",))
        w2, c2 = _clock()
    peak = _peak_mb() - rss0
    nn = size["nq"] if a.naive_queries <= 0 else min(a.naive_queries, size["nq"])
    ap_all = average_precision(st, None)
    del st
    cpu, wall = c2 - c0, w2 - w0
    out: dict[str, Any] = {
        "n_queries": size["nq"],
        "n_database": size["nb"],
        "classes": size["classes"],
        "bits": a.bits,
        "device": a.device,
        "fghash": {
            "cpu_s": round(cpu, 3),
            "wall_s": round(wall, 3),
            "counts_cpu_s": round(c1 - c0, 3),
            "metrics_cpu_s": round(c2 - c1, 3),
            "peak_extra_mb": round(peak, 1),
            "warnings": [str(w.message) for w in caught],
            "map@all_tie_aware": ours["tie-aware"]["map@all"],
            "map@100_tie_aware": ours["tie-aware"]["map@k"]["100"],
            "map@all_tie_aware_naive_queries": float(np.mean(ap_all[:nn])),
        },
    }
    scale = size["nq"] / max(nn, 1)
    for name, onehot in (("naive", True), ("naive_lean", False)):
        w3, c3 = _clock()
        res = naive_metrics(q[:nn], b, ql[:nn], bl, onehot=onehot)
        w4, c4 = _clock()
        out[name] = {
            "relevance": "one-hot label product" if onehot else "label ids compared",
            "queries_timed": nn,
            "cpu_s": round((c4 - c3) * scale, 3),
            "wall_s": round((w4 - w3) * scale, 3),
            "measured_cpu_s": round(c4 - c3, 3),
            "map@all_argsort": res["map@all"],
            "map@100_argsort": res["map@100"],
            "speedup_cpu": round((c4 - c3) * scale / max(cpu, 1e-9), 1),
            "speedup_wall": round((w4 - w3) * scale / max(wall, 1e-9), 1),
        }
    out["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    out["machine"] = machine_info()
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
