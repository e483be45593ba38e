"""Hamming search then float re-ranking against binary-only and exact float search
(a script, not a test).

For each codes file given (it needs query and database splits with labels and float
``features``: relaxed codes, backbone features from ``fghash encode --features backbone``,
or a generated set's from ``make_codes --dim``), in one run and with one thread count:

* binary only: FAISS ``IndexBinaryFlat``, the ``k`` Hamming nearest;
* re-ranked: the ``k·X`` Hamming nearest re-ranked by the float score
  (:func:`bench.rerank.measure_rerank`), for each ``--oversample`` X;
* exact float: FAISS ``knn`` over all the features (``IndexFlatIP``/``IndexFlatL2``).

Each with mAP@k (``k = --k``) and QPS (whole query set in one batch, median of
``--runs``). Prints a table per file with, for each re-ranked row, the share of the
binary→float mAP gap it recovers and its speed against exact float search. Goal: X = 10
recovers at least 80 % of the gap while staying at least 10× faster than exact float.

    python -m bench.scripts.bench_rerank CODES.h5 [CODES.h5 ...] [--k 100]
        [--oversample 2,4,10] [--metric ip] [--runs 5] [--threads N] [--json OUT]
        [--candidates flat,ivf] [--nlist N] [--nprobe P]

``--candidates ivf`` adds re-ranked rows whose candidates come from a binary IVF index
(``--nlist`` lists, ``--nprobe`` visited) instead of the flat index's exact scan.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

__all__ = ["bench_file", "main"]


def bench_file(
    path: str,
    k: int,
    oversample: list[int],
    metric: str,
    runs: int,
    candidates: tuple[str, ...] = ("flat",),
    nlist: int | None = None,
    nprobe: int | None = None,
) -> list[dict[str, Any]]:
    """Binary-only, re-ranked and exact float rows of one codes file."""
    from bench.evaluate import load_for_bench
    from bench.rerank import measure_rerank
    from bench.throughput import measure_binary, measure_float
    from fghash.eval.ranking import rank_hamming

    cf = load_for_bench(path)
    q, db = cf["query"], cf["database"]
    if q.features is None or db.features is None or q.labels is None:
        raise SystemExit(f"{path}: needs labels and float features in both splits.")
    k = min(k, len(db))
    timing = dict(runs=runs, warmup=1, latency_queries=0, max_seconds=None)
    lab = dict(qlabels=q.labels, dblabels=db.labels)
    counts = rank_hamming(q.codes, db.codes, cf.bits, kmax=k).n
    rows = measure_binary(
        db.codes, q.codes, cf.bits, ["flat"], [k], exact_counts=counts, progress=False,
        **lab, **timing,
    )  # fmt: skip
    for kind in candidates:
        rows += measure_rerank(
            db.codes, q.codes, cf.bits, db.features, q.features, [k], oversample=oversample,
            metrics=[metric], floats_kind=db.features_kind or "unknown", candidates=kind,
            nlist=nlist, nprobe=nprobe, **lab, **timing,
        )  # fmt: skip
    rows += measure_float(db.features, q.features, [k], metrics=[metric], **lab, **timing)
    return rows


def _table(path: str, rows: list[dict[str, Any]], k: int) -> str:
    binary = rows[0]["accuracy"][f"map@{k}"]
    exact = rows[-1]["accuracy"][f"map@{k}"]
    float_qps = rows[-1]["qps"]
    out = [f"{path}: mAP@{k}, binary {binary:.4f} → exact float {exact:.4f}"]
    out.append(
        f"  {'search':<28}{'mAP@' + str(k):>9}{'QPS':>11}{'gap recovered':>15}{'× float':>9}"
    )
    for r in rows:
        name = {"flat": "binary only (flat)"}.get(r["kind"], r["kind"])
        if r["backend"] == "rerank":
            name = f"re-ranked X={r['sweep']['oversample']}"
            if "candidates" in r["params"]:
                pr = r["params"]
                name += f" ivf {pr['nlist']}/{pr['nprobe']}"
        m = r["accuracy"][f"map@{k}"]
        gap = (m - binary) / (exact - binary) if exact != binary else float("nan")
        out.append(
            f"  {name:<28}{m:>9.4f}{r['qps']:>11.0f}{gap:>14.0%} {r['qps'] / float_qps:>8.1f}"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.scripts.bench_rerank",
        description="mAP and QPS of binary-only, re-ranked and exact float search.",
    )
    p.add_argument("codes", nargs="+", help="codes files with labels and float features")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--oversample", default="2,4,10", help="X values, comma-separated")
    p.add_argument("--metric", choices=["ip", "l2"], default="ip")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument(
        "--candidates", default="flat", help="index kinds giving the candidates: flat, ivf"
    )
    p.add_argument("--nlist", type=int, help="ivf lists (default: fghash's)")
    p.add_argument("--nprobe", type=int, help="ivf lists visited (default: fghash's)")
    p.add_argument("--threads", type=int, help="FAISS threads (default: FAISS's own)")
    p.add_argument("--json", help="also write the rows here")
    a = p.parse_args(argv)
    import faiss

    if a.threads:
        faiss.omp_set_num_threads(a.threads)
    from fghash.util.lists import parse_list

    xs = parse_list(a.oversample, example="2,4,10")
    print(f"{platform.processor() or platform.machine()}, {faiss.omp_get_max_threads()} threads")
    every = {}
    for path in a.codes:
        kinds = tuple(parse_list(a.candidates, str, what="index kinds", example="flat,ivf"))
        rows = bench_file(path, a.k, xs, a.metric, a.runs, kinds, a.nlist, a.nprobe)
        every[path] = rows
        print(_table(path, rows, a.k), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(every, indent=1, default=float))


if __name__ == "__main__":
    main()
