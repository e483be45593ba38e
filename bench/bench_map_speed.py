"""Time tie-aware mAP@all on a Food-101-sized random problem.

Food-101 in the A²-Net protocol: 25,250 queries (test split) against 75,750 database
items (train split), 101 classes; 48-bit codes. Codes here are random, so no two
queries share a code and no work is saved by de-duplication (trained codes repeat a
lot, which makes real files faster than this).

    python -m bench.bench_map_speed [--nq 25250] [--nb 75750] [--bits 48] [--stable]
                                    [--device cpu|cuda]

``--device cuda`` counts with torch on the GPU (:mod:`fghash.ranking_torch`); the time
then includes moving the codes to the GPU and the counts back, after one warm-up run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from functools import partial

import numpy as np

from fghash.metrics import average_precision
from fghash.ranking import rank_hamming

__all__ = ["main"]


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nq", type=int, default=25_250)
    p.add_argument("--nb", type=int, default=75_750)
    p.add_argument("--bits", type=int, default=48)
    p.add_argument("--classes", type=int, default=101)
    p.add_argument("--stable", action="store_true", help="also time the stable ranking")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="cpu: numpy; cuda: torch"
    )
    a = p.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    nbytes = (a.bits + 7) // 8
    q = np.packbits(rng.random((a.nq, a.bits)) < 0.5, axis=1, bitorder="little")[:, :nbytes]
    b = np.packbits(rng.random((a.nb, a.bits)) < 0.5, axis=1, bitorder="little")[:, :nbytes]
    ql = rng.integers(0, a.classes, a.nq)
    bl = rng.integers(0, a.classes, a.nb)
    kw = {"stable": a.stable, "kmax": 100 if a.stable else 0}
    if a.device == "cpu":
        rank = rank_hamming
    else:
        from fghash.ranking_torch import rank_hamming_torch

        rank = partial(rank_hamming_torch, device=a.device)
        rank(q[:64], b, a.bits, ql[:64], bl, **kw)  # warm-up: CUDA context, kernels
    t0 = time.perf_counter()
    st = rank(q, b, a.bits, ql, bl, **kw)
    t1 = time.perf_counter()
    m = float(np.mean(average_precision(st, None, "tie-aware")))
    t2 = time.perf_counter()
    out = {
        "n_queries": a.nq,
        "n_database": a.nb,
        "bits": a.bits,
        "stable_too": a.stable,
        "device": a.device,
        "counts_s": round(t1 - t0, 3),
        "map_from_counts_s": round(t2 - t1, 3),
        "total_s": round(t2 - t0, 3),
        "map@all_tie_aware": m,
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "machine": platform.processor() or platform.machine(),
    }
    if a.stable:
        out["map@all_stable"] = float(np.mean(average_precision(st, None, "stable")))
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
