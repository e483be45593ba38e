"""fghash at 1M-100M items against raw FAISS, in one run.

For each database size N (a clustered synthetic codes file from :mod:`bench.scripts.make_codes`,
64-bit codes, no features, made once in ``--workdir``) it measures, side by side:

- ``fghash build-index`` (a fresh process) against a minimal FAISS script (h5py read of
  the codes + ``IndexBinaryFlat.add`` + ``write_index_binary``): wall time and peak RSS;
- :func:`index.load_index` against ``faiss.read_index_binary`` (in a fresh process,
  file in the page cache);
- one query through the CLI (``fghash search BUNDLE --code HEX -k 10``) against a
  minimal script that reads the index and searches it, process start included;
- batch search of ``--nq`` queries: fghash (search + result records) against
  ``index.search`` of raw FAISS, queries per second;
- tie-aware mAP@all of ``--eval-queries`` queries (fghash's ranking + metrics) against
  a naive evaluator (XOR + popcount, argsort, cumulative precision).

Each timing is the median of ``--repeat`` runs, fghash and its reference alternating.
Ratios are fghash / reference; the targets (build ≤ 1.5× time and memory, load ≤ 1.5×)
are checked at the largest size. ``fghash --help`` is timed against ``python -c pass``.

    python -m bench.scripts.bench_scale --sizes 1000000,10000000 --workdir /tmp/scale
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "naive_map"]

BITS = 64

RAW_BUILD = """
import sys, h5py, faiss
with h5py.File(sys.argv[1], "r") as f:
    x = f["database/codes"][()]
index = faiss.IndexBinaryFlat(x.shape[1] * 8)
index.add(x)
faiss.write_index_binary(index, sys.argv[2])
"""

RAW_QUERY = """
import sys, faiss, numpy as np
index = faiss.read_index_binary(sys.argv[1])
q = np.frombuffer(bytes.fromhex(sys.argv[2]), dtype=np.uint8).reshape(1, -1)
D, I = index.search(q, 10)
print(D, I)
"""

LOAD = """
import sys, time, faiss, h5py
from index import load_index
t = time.perf_counter()
if sys.argv[1] == "fghash":
    index, items = load_index(sys.argv[2], device="cpu")
else:
    index = faiss.read_index_binary(sys.argv[2] + "/index.faiss")
print(time.perf_counter() - t)
"""


_GNU_TIME = "/usr/bin/time"


def _measured(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stdout of one child process.

    The peak comes from GNU time when present: a child forked straight from this
    (large) process would report this process's RSS at the fork as its own peak (Linux
    carries ``maxrss`` across fork and exec); GNU time's child starts from a small one.
    """
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        wrapped = argv
        if os.access(_GNU_TIME, os.X_OK):
            wrapped = [_GNU_TIME, "-f", "%M", "-o", rss.name, *argv]
        t = time.perf_counter()
        p = subprocess.run(wrapped, capture_output=True, env=env)
        wall = time.perf_counter() - t
        if p.returncode:
            raise RuntimeError(f"{' '.join(argv[:5])} failed: {p.stderr.decode()[-800:]}")
        text = rss.read().strip().splitlines()
    peak = float(text[-1]) / 1024 if text and text[-1].isdigit() else float("nan")
    return wall, peak, p.stdout.decode()


def _median_pair(
    a: list[str], b: list[str], env: dict[str, str], repeat: int, before: Any = None
) -> tuple[list[tuple[float, float, str]], list[tuple[float, float, str]]]:
    ra, rb = [], []
    for _ in range(repeat):
        if before:
            before("a")
        ra.append(_measured(a, env))
        if before:
            before("b")
        rb.append(_measured(b, env))
    return ra, rb


def _med(rows: list[tuple[float, float, str]], i: int) -> float:
    return float(statistics.median(r[i] for r in rows))


_BYTE_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1)


def naive_map(q: np.ndarray, db: np.ndarray, ql: np.ndarray, dl: np.ndarray) -> float:
    """mAP@all the plain way: XOR + popcount, stable argsort, cumulative precision."""
    aps = []
    for i in range(q.shape[0]):
        d = _BYTE_BITS[np.bitwise_xor(db, q[i])].sum(axis=1)  # numpy < 2 has no bitwise_count
        order = np.argsort(d, kind="stable")
        rel = dl[order] == ql[i]
        hits = np.cumsum(rel)
        ranks = np.flatnonzero(rel) + 1
        aps.append(float(np.mean(hits[rel] / ranks)) if ranks.size else 0.0)
    return float(np.mean(aps))


def _codes(path: Path, n: int, nq: int) -> Path:
    from bench.scripts.make_codes import make_clustered_codes

    if not path.exists():
        make_clustered_codes(path, n=n, nq=nq, bits=BITS, dim=0, classes=1000, seed=0)
    return path


def _one_size(n: int, work: Path, a: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """Every comparison of the module docstring at database size ``n``."""
    import h5py

    codes = _codes(work / f"codes-{n}.h5", n, max(a.nq, a.eval_queries))
    bundle = work / f"bundle-{n}"
    res: dict[str, Any] = {"n": n, "bits": BITS, "codes_mb": round(codes.stat().st_size / 2**20)}
    res["build"] = _build(codes, bundle, work / f"raw-{n}.faiss", env, a.repeat)
    res["load"] = _load(bundle, env, a.repeat)
    with h5py.File(codes, "r") as f:
        q = f["query/codes"][()]
        ql = f["query/labels"][()]
    res["one_query_cli"] = _one_query(bundle, q[0], env, a.repeat)
    res["batch"] = _batch(bundle, q[: a.nq], a.threads, a.repeat)
    with h5py.File(codes, "r") as f:
        db = f["database/codes"][()]
        dl = f["database/labels"][()]
    res["map_eval"] = _map_eval(q[: a.eval_queries], ql[: a.eval_queries], db, dl)
    return res


def _build(
    codes: Path, bundle: Path, raw: Path, env: dict[str, str], repeat: int
) -> dict[str, Any]:
    """``fghash build-index`` against the minimal FAISS script: time and peak memory."""
    py = sys.executable

    def clean(which: str) -> None:
        if which == "a":
            shutil.rmtree(bundle, ignore_errors=True)
        else:
            raw.unlink(missing_ok=True)

    fg = [py, "-m", "fghash", "-q", "build-index", str(codes), "--out", str(bundle)]
    fg += ["--type", "flat", "--device", "cpu"]
    rf, rr = _median_pair(fg, [py, "-c", RAW_BUILD, str(codes), str(raw)], env, repeat, clean)
    out = {
        "fghash_s": _med(rf, 0),
        "faiss_s": _med(rr, 0),
        "fghash_peak_mb": _med(rf, 1),
        "faiss_peak_mb": _med(rr, 1),
    }
    out["time_ratio"] = out["fghash_s"] / out["faiss_s"]
    out["memory_ratio"] = out["fghash_peak_mb"] / out["faiss_peak_mb"]
    return out


def _load(bundle: Path, env: dict[str, str], repeat: int) -> dict[str, float]:
    """:func:`index.load_index` against ``faiss.read_index_binary``, each in a fresh process."""
    py = sys.executable
    lf, lr = _median_pair(
        [py, "-c", LOAD, "fghash", str(bundle)],
        [py, "-c", LOAD, "faiss", str(bundle)],
        env,
        repeat,
    )
    load_f = statistics.median(float(r[2]) for r in lf)
    load_r = statistics.median(float(r[2]) for r in lr)
    return {"fghash_s": load_f, "faiss_s": load_r, "ratio": load_f / load_r}


def _one_query(
    bundle: Path, code: np.ndarray, env: dict[str, str], repeat: int
) -> dict[str, float]:
    """One query through ``fghash search`` against a minimal script, process start included."""
    from fghash.codes import code_to_hex

    py = sys.executable
    hexq = code_to_hex(code)
    cf, cr = _median_pair(
        [py, "-m", "fghash", "search", str(bundle), "--code", hexq, "-k", "10"],
        [py, "-c", RAW_QUERY, str(bundle / "index.faiss"), hexq],
        env,
        repeat,
    )
    out = {"fghash_s": _med(cf, 0), "faiss_s": _med(cr, 0)}
    out["ratio"] = out["fghash_s"] / out["faiss_s"]
    return out


def _batch(bundle: Path, xq: np.ndarray, threads: int, repeat: int) -> dict[str, Any]:
    """Queries per second of fghash's search (and with result records) against raw FAISS."""
    import faiss

    from index import load_index
    from index.items import result_rows

    faiss.omp_set_num_threads(threads)
    index, items = load_index(bundle, device="cpu")
    fi = faiss.read_index_binary(str(bundle / "index.faiss"))
    tf, tfr, tr = [], [], []
    for _ in range(repeat):
        t = time.perf_counter()
        D, I = index.search(xq, 10)
        tf.append(time.perf_counter() - t)
        result_rows(D, I, items)
        tfr.append(time.perf_counter() - t)
        t = time.perf_counter()
        fi.search(xq, 10)
        tr.append(time.perf_counter() - t)
    out = {
        "nq": int(xq.shape[0]),
        "fghash_qps": xq.shape[0] / statistics.median(tf),
        "fghash_with_records_qps": xq.shape[0] / statistics.median(tfr),
        "faiss_qps": xq.shape[0] / statistics.median(tr),
    }
    out["ratio"] = out["fghash_qps"] / out["faiss_qps"]
    return out


def _map_eval(qe: np.ndarray, qle: np.ndarray, db: np.ndarray, dl: np.ndarray) -> dict[str, Any]:
    """Tie-aware mAP@all by fghash's ranking and metrics against :func:`naive_map`."""
    from fghash.eval.metrics import average_precision
    from fghash.eval.ranking import rank_hamming

    t = time.perf_counter()
    st = rank_hamming(qe, db, BITS, qle, dl, stable=False, kmax=0)
    m_f = float(np.mean(average_precision(st, None, "tie-aware")))
    t_f = time.perf_counter() - t
    t = time.perf_counter()
    m_n = naive_map(qe, db, qle, dl)
    t_n = time.perf_counter() - t
    return {
        "queries": int(qe.shape[0]),
        "fghash_s": t_f,
        "naive_s": t_n,
        "speedup": t_n / t_f,
        "map_tie_aware": m_f,
        "map_naive_stable": m_n,
    }


def _help_time(env: dict[str, str], repeat: int) -> dict[str, float]:
    py = sys.executable
    h, p = _median_pair([py, "-m", "fghash", "--help"], [py, "-c", "pass"], env, max(repeat, 5))
    return {
        "fghash_help_s": _med(h, 0),
        "python_pass_s": _med(p, 0),
        "diff_s": _med(h, 0) - _med(p, 0),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        prog="python -m bench.scripts.bench_scale", description=__doc__.splitlines()[0]
    )
    p.add_argument("--sizes", default="1000000,10000000", help="database sizes, comma-separated")
    p.add_argument("--workdir", default="bench-scale", help="folder for codes files and bundles")
    p.add_argument("--nq", type=int, default=1000, help="queries for batch QPS")
    p.add_argument("--eval-queries", type=int, default=20, help="queries for the mAP timing")
    p.add_argument("--repeat", type=int, default=3, help="runs per timing (median)")
    p.add_argument("--threads", type=int, default=2, help="FAISS threads in this process")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",") if s.strip()]
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(a.threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    out: dict[str, Any] = {
        "command": "python -m bench.scripts.bench_scale " + " ".join(argv or sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "omp_num_threads": env["OMP_NUM_THREADS"],
            "python": platform.python_version(),
        },
        "help": _help_time(env, a.repeat),
        "sizes": [],
    }
    print(json.dumps(out["help"]), flush=True)
    for n in sizes:
        r = _one_size(n, work, a, env)
        out["sizes"].append(r)
        print(json.dumps(r), flush=True)
    top = out["sizes"][-1] if out["sizes"] else None
    if top:
        out["targets"] = {
            "n": top["n"],
            "build_time_le_1.5x": top["build"]["time_ratio"] <= 1.5,
            "build_memory_le_1.5x": top["build"]["memory_ratio"] <= 1.5,
            "load_le_1.5x": top["load"]["ratio"] <= 1.5,
            "help_within_0.3s": out["help"]["diff_s"] <= 0.3,
        }
    print(json.dumps(out.get("targets"), indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    main()
