"""Does zero-padding binary codes to a FAISS-fast width pay off? (a script, not a test)

On one random database, times exact k-NN search with

* ``IndexBinaryFlat`` over 48-bit codes stored as 6 bytes (FAISS's generic kernel),
* ``IndexBinaryFlat`` over the same codes zero-padded to 64 bits / 8 bytes (the
  dedicated ``HammingComputer8`` kernel; identical distances, checked below),
* ``IndexFlatIP`` over 2048-d float32 vectors (exact float search, the usual baseline),

with the same queries count, thread count (``faiss.omp_set_num_threads``), one warm-up
run and the median of ``--runs`` timed runs. Prints a small table with queries per
second and ratios.

On a machine shared with other busy processes, OpenMP's default active spin-waiting
makes multi-threaded FAISS timings erratic (a thread spinning at a barrier while its
partner is descheduled); run with ``OMP_WAIT_POLICY=PASSIVE`` there. The policy in
force is printed with the results.

    python -m bench.scripts.bench_padding [--n 100000] [--nq 1000] [--runs 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from index.padding import fast_dim, pad_codes  # noqa: E402

__all__ = ["time_search", "main"]


def time_search(search: Callable[[], object], runs: int) -> list[float]:
    """One warm-up call, then ``runs`` timed calls; seconds per call."""
    search()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        search()
        times.append(time.perf_counter() - t0)
    return times


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.scripts.bench_padding", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--n", type=int, default=100_000, help="database size")
    p.add_argument("--nq", type=int, default=1000, help="number of queries")
    p.add_argument("--k", type=int, default=10, help="neighbours per query")
    p.add_argument("--bits", type=int, default=48, help="code length")
    p.add_argument("--float-dim", type=int, default=2048, help="dimension of float vectors")
    p.add_argument("--runs", type=int, default=5, help="timed runs (median reported)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="FAISS/OpenMP threads")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import faiss

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    nbytes = (args.bits + 7) // 8
    xb01 = rng.integers(0, 2, (args.n, args.bits), dtype=np.uint8)
    xq01 = rng.integers(0, 2, (args.nq, args.bits), dtype=np.uint8)
    xb = np.packbits(xb01, axis=1, bitorder="little")
    xq = np.packbits(xq01, axis=1, bitorder="little")
    dim = fast_dim(args.bits)
    xb_pad, xq_pad = pad_codes(xb, args.bits, dim), pad_codes(xq, args.bits, dim)

    plain = faiss.IndexBinaryFlat(nbytes * 8)
    plain.add(xb)
    padded = faiss.IndexBinaryFlat(dim)
    padded.add(xb_pad)
    D1, _ = plain.search(xq, args.k)
    D2, _ = padded.search(xq_pad, args.k)
    same = bool(np.array_equal(D1, D2))

    fb = rng.standard_normal((args.n, args.float_dim), dtype=np.float32)
    fq = rng.standard_normal((args.nq, args.float_dim), dtype=np.float32)
    flat_ip = faiss.IndexFlatIP(args.float_dim)
    flat_ip.add(fb)

    cases = [
        (
            f"binary flat, {args.bits} bits as {nbytes * 8} (unpadded)",
            nbytes,
            lambda: plain.search(xq, args.k),
        ),
        (
            f"binary flat, {args.bits} bits padded to {dim}",
            dim // 8,
            lambda: padded.search(xq_pad, args.k),
        ),
        (
            f"float IndexFlatIP, {args.float_dim}-d",
            4 * args.float_dim,
            lambda: flat_ip.search(fq, args.k),
        ),
    ]
    rows = []
    for name, code_bytes, fn in cases:
        t = time_search(fn, args.runs)
        rows.append((name, code_bytes, statistics.median(t), min(t), max(t)))

    base_qps = args.nq / rows[0][2]
    print(
        f"n={args.n} nq={args.nq} k={args.k} threads={args.threads} runs={args.runs} "
        f"(median after 1 warm-up) faiss={faiss.__version__} cpu={_cpu_name()} "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}"
    )
    print(f"padded and unpadded distances identical: {'yes' if same else 'NO'}")
    head = f"{'index':<40} {'bytes/item':>10} {'median ms':>10} {'min-max ms':>15} {'QPS':>12} {'vs unpadded':>12}"
    print(head)
    print("-" * len(head))
    for name, code_bytes, med, lo, hi in rows:
        qps = args.nq / med
        spread = f"{lo * 1e3:.1f}-{hi * 1e3:.1f}"
        print(
            f"{name:<40} {code_bytes:>10} {med * 1e3:>10.1f} {spread:>15} {qps:>12,.0f} "
            f"{qps / base_qps:>11.2f}x"
        )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
