"""Bytes per code, build time, QPS per core and recall of each index kind at 1M-10M codes,
and a cost model that predicts the larger sizes from the smallest before they are measured.

For each database size N (a clustered synthetic codes file of :mod:`bench.scripts.make_codes`,
64-bit codes, 200 classes, no features; ``--codes-dir``'s ``codes-N.h5`` is reused when it
exists, otherwise written into ``--workdir``) and each index kind:

- ``flat`` (``IndexBinaryFlat``, exact: also the truth for recall);
- ``ivf`` (``IndexBinaryIVF``, ``nlist = round(4·sqrt N)``, several ``nprobe``; k-means on
  at most ``--train-per-list`` codes a list, 64 by default against FAISS's 256, so that
  10M builds in minutes on two cores);
- ``multihash`` (``IndexBinaryMultiHash``, fghash's default ``b``/``nhash``, ``nflip`` 1);
- ``hnsw`` (``IndexBinaryHNSW``, M 32) only up to ``--hnsw-max-n`` and within
  ``--hnsw-budget`` seconds of building (added in chunks; skipped with a note past it);

it records the serialized index size per code (``faiss.serialize_index_binary`` / N) and
the items metadata per code (the ids and labels the bundle's ``items.h5`` stores, int64
each), the build seconds (2 threads), the QPS of one batch of ``--nq`` queries with FAISS
on 1 and on 2 threads (best of up to three runs), and recall@k, tie-aware, against flat.
Milvus Lite is not measured (its load of 1M rows takes minutes; docs/scaling.md models it).

**The cost model** (:func:`fit_model`), fitted to the smallest size measured:

- flat: seconds a query = ``a·N`` (one core); ``c`` cores give ``speedup(c)`` measured;
- ivf: seconds a query = ``a·nprobe·N/nlist + b·nlist`` (scan the probed lists, rank the
  centroids), ``a`` and ``b`` from the nprobe sweep by least squares; training
  ``∝ sample·nlist`` (k-means), adding ``∝ N·nlist`` (each code to its centroid); recall
  at equal nprobe assumed unchanged (a guess, checked);
- multihash: seconds a query = ``a·C + b``, ``C = nhash·(1 + b_bits)·N / 2^b_bits`` the
  candidates of uniformly spread buckets with one flipped bit;
- memory: bytes a code constant per kind (+ ``nlist`` centroids for ivf); builds of flat
  and multihash ``∝ N``.

Before measuring a larger size the model's prediction for it is written to ``--out``;
the measurement is then stored beside it with the relative error. Sizes run one call at a
time accumulate in the same ``--out``, so each size can run under its own lock:

    flock /tmp/fghash-cpu.lock python -m bench.scripts.bench_scaling --sizes 1000000 --out scaling.json
    flock /tmp/fghash-cpu.lock python -m bench.scripts.bench_scaling --sizes 10000000 --out scaling.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["fit_model", "main", "measure_size", "predict"]

BITS = 64
K = 10
_MIN_TIME_S = 0.5  # a timed batch repeats until this much was measured (at most 3 runs)
_IVF_FACTOR = 4.0
_HNSW_CHUNK = 50_000


class _Clock:
    """The whole run's time budget; ``allows`` records what it skipped."""

    def __init__(self, budget: float) -> None:
        self.end = time.perf_counter() + budget
        self.skipped: list[str] = []

    def allows(self, what: str, cost: float = 0.0) -> bool:
        if time.perf_counter() + cost < self.end:
            return True
        self.skipped.append(what)
        return False


def _threads(n: int) -> None:
    import faiss

    faiss.omp_set_num_threads(int(n))


def _codes(n: int, codes_dir: Path, work: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Database codes, query codes and items-metadata bytes of the size-``n`` file."""
    import h5py

    from bench.scripts.make_codes import make_clustered_codes

    path = codes_dir / f"codes-{n}.h5"
    if not path.exists():
        path = work / f"codes-{n}.h5"
        if not path.exists():
            work.mkdir(parents=True, exist_ok=True)
            make_clustered_codes(path, n=n, nq=2000, bits=BITS, dim=0, classes=200, seed=0)
    with h5py.File(path, "r") as f:
        xb = f["database/codes"][()]
        xq = f["query/codes"][()]
        items = sum(
            f[f"database/{k}"].dtype.itemsize for k in ("ids", "labels") if k in f["database"]
        )
    return xb, xq, int(items) * n


def _timed(fn: Any) -> tuple[Any, float]:
    """``fn()``'s result and its best time over up to three runs (stops at _MIN_TIME_S)."""
    best, spent, out = math.inf, 0.0, None
    for _ in range(3):
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        best, spent = min(best, dt), spent + dt
        if spent >= _MIN_TIME_S:
            break
    return out, best


def _qps(fi: Any, xq: np.ndarray, kth: np.ndarray, xb: np.ndarray) -> dict[str, float]:
    """QPS on 1 and 2 threads and tie-aware recall@K of one FAISS index."""
    from index.tune import tie_aware_recall

    row: dict[str, float] = {}
    for c in (1, 2):
        _threads(c)
        (_, I), dt = _timed(lambda: fi.search(xq, K))
        row[f"qps_{c}"] = xq.shape[0] / dt
    row["recall"] = tie_aware_recall(xq, xb, I, kth)
    return row


def _bytes(fi: Any) -> int:
    import faiss

    return int(faiss.serialize_index_binary(fi).size)


def _built(make: Any) -> tuple[Any, float]:
    _threads(2)
    t = time.perf_counter()
    fi = make()
    return fi, time.perf_counter() - t


def _flat(xb: np.ndarray, xq: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    import faiss

    from index.tune import hamming_rows

    def make() -> Any:
        fi = faiss.IndexBinaryFlat(BITS)
        fi.add(xb)
        return fi

    fi, build_s = _built(make)
    _threads(2)
    _, I = fi.search(xq, K)
    kth = hamming_rows(xq, xb, I)[:, -1]
    row = {"kind": "flat", "params": {}, "build_s": build_s, "index_bytes": _bytes(fi)}
    row.update(_qps(fi, xq, kth, xb))
    return row, kth


def _ivf(
    xb, xq, kth, nprobes: list[int], train_per_list: int, clock: _Clock
) -> list[dict[str, Any]]:
    import faiss

    n = xb.shape[0]
    nlist = max(1, min(round(_IVF_FACTOR * math.sqrt(n)), n // 39))

    fi = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(BITS), BITS, nlist)
    fi.cp.max_points_per_centroid = train_per_list
    train_points = min(n, train_per_list * nlist)
    _, train_s = _built(lambda: fi.train(xb))
    _, add_s = _built(lambda: fi.add(xb))
    build_s = train_s + add_s
    size = _bytes(fi)
    rows = []
    for p in nprobes:
        if p > nlist or not clock.allows(f"ivf nprobe={p} at N={n}"):
            continue
        fi.nprobe = p
        row = {"kind": "ivf", "params": {"nlist": nlist, "nprobe": p}, "build_s": build_s}
        row.update(train_s=train_s, add_s=add_s, train_points=train_points, index_bytes=size)
        row.update(_qps(fi, xq, kth, xb))
        rows.append(row)
    return rows


def _multihash(xb, xq, kth) -> dict[str, Any]:
    import faiss

    from index.binary import default_hash_params

    n = xb.shape[0]
    b, nhash = default_hash_params(BITS, n, "multihash")

    def make() -> Any:
        fi = faiss.IndexBinaryMultiHash(BITS, nhash, b)
        fi.nflip = 1
        fi.add(xb)
        return fi

    fi, build_s = _built(make)
    row = {"kind": "multihash", "params": {"b": b, "nhash": nhash, "nflip": 1}}
    row.update(build_s=build_s, index_bytes=_bytes(fi))
    row.update(_qps(fi, xq, kth, xb))
    return row


def _hnsw(xb, xq, kth, budget: float) -> dict[str, Any]:
    """HNSW added in chunks; searched only when all of ``xb`` went in within ``budget``."""
    import faiss

    n = xb.shape[0]
    fi = faiss.IndexBinaryHNSW(BITS, 32)
    _threads(2)
    t = time.perf_counter()
    for s in range(0, n, _HNSW_CHUNK):
        if time.perf_counter() - t > budget:
            break
        fi.add(xb[s : s + _HNSW_CHUNK])
    build_s = time.perf_counter() - t
    row: dict[str, Any] = {"kind": "hnsw", "params": {"M": 32, "efSearch": 64}}
    row.update(build_s=build_s, added=int(fi.ntotal))
    if fi.ntotal < n:
        row["note"] = f"built {fi.ntotal} of {n} in {build_s:.0f} s (budget); not searched"
        return row
    fi.hnsw.efSearch = 64
    row["index_bytes"] = _bytes(fi)
    row.update(_qps(fi, xq, kth, xb))
    return row


def measure_size(n: int, a: argparse.Namespace, clock: _Clock) -> dict[str, Any]:
    """Every kind of the module docstring at database size ``n``."""
    xb, xq, items_bytes = _codes(n, Path(a.codes_dir), Path(a.workdir))
    xq = xq[: a.nq]
    res: dict[str, Any] = {"n": n, "nq": int(xq.shape[0]), "k": K, "items_bytes": items_bytes}
    flat, kth = _flat(xb, xq)
    rows = [flat]
    if clock.allows(f"ivf at N={n}"):
        rows += _ivf(xb, xq, kth, a.nprobe, a.train_per_list, clock)
    if clock.allows(f"multihash at N={n}"):
        rows.append(_multihash(xb, xq, kth))
    if n <= a.hnsw_max_n and clock.allows(f"hnsw at N={n}", a.hnsw_budget):
        rows.append(_hnsw(xb, xq, kth, a.hnsw_budget))
    for r in rows:
        if "index_bytes" in r:
            r["bytes_per_code"] = r["index_bytes"] / n
            r["bytes_per_code_with_items"] = (r["index_bytes"] + items_bytes) / n
    res["rows"] = rows
    return res


def _mh_candidates(n: int, b: int, nhash: int) -> float:
    return nhash * (1 + b) * n / 2.0**b


def fit_model(m: dict[str, Any]) -> dict[str, Any]:
    """The cost model of the module docstring, fitted to one size's measurement ``m``."""
    n = m["n"]
    by = {r["kind"]: r for r in m["rows"] if "qps_1" in r}
    model: dict[str, Any] = {"fitted_at_n": n}
    if "flat" in by:
        f = by["flat"]
        model["flat"] = {
            "s_per_query_per_code": 1.0 / f["qps_1"] / n,
            "speedup_2": f["qps_2"] / f["qps_1"],
            "bytes_per_code": f["index_bytes"] / n,
            "build_s_per_code": f["build_s"] / n,
        }
    ivf = [r for r in m["rows"] if r["kind"] == "ivf"]
    if ivf:
        nlist = ivf[0]["params"]["nlist"]
        x = np.array([r["params"]["nprobe"] * n / nlist for r in ivf], dtype=float)
        y = np.array([1.0 / r["qps_1"] for r in ivf])
        a, c0 = np.polyfit(x, y, 1) if len(ivf) > 1 else (y[0] / x[0], 0.0)
        model["ivf"] = {
            "s_per_scanned_code": float(max(a, 0.0)),
            "s_per_centroid": float(max(c0, 0.0)) / nlist,
            "speedup_2": float(np.median([r["qps_2"] / r["qps_1"] for r in ivf])),
            "bytes_per_code": (ivf[0]["index_bytes"] - nlist * BITS // 8) / n,
            "train_s_per_point_list": ivf[0]["train_s"] / (ivf[0]["train_points"] * nlist),
            "add_s_per_code_list": ivf[0]["add_s"] / (n * nlist),
            "train_per_list": ivf[0]["train_points"] / nlist,
            "recall": {str(r["params"]["nprobe"]): r["recall"] for r in ivf},
        }
    if "multihash" in by:
        h = by["multihash"]
        cand = _mh_candidates(n, h["params"]["b"], h["params"]["nhash"])
        model["multihash"] = {
            "s_per_candidate": 1.0 / h["qps_1"] / cand,
            "speedup_2": h["qps_2"] / h["qps_1"],
            "bytes_per_code": h["index_bytes"] / n,
            "build_s_per_code": h["build_s"] / n,
            "recall": h["recall"],
        }
    return model


def predict(model: dict[str, Any], n: int, nprobes: list[int]) -> list[dict[str, Any]]:
    """Rows shaped like :func:`measure_size`'s, every figure from ``model`` at size ``n``."""
    rows: list[dict[str, Any]] = []
    if "flat" in model:
        f = model["flat"]
        q1 = 1.0 / (f["s_per_query_per_code"] * n)
        rows.append(
            {"kind": "flat", "params": {}, "qps_1": q1, "qps_2": q1 * f["speedup_2"]}
            | {"index_bytes": f["bytes_per_code"] * n, "build_s": f["build_s_per_code"] * n}
            | {"recall": 1.0}
        )
    if "ivf" in model:
        v = model["ivf"]
        nlist = max(1, min(round(_IVF_FACTOR * math.sqrt(n)), n // 39))
        train_points = min(n, v["train_per_list"] * nlist)
        train_s = v["train_s_per_point_list"] * train_points * nlist
        add_s = v["add_s_per_code_list"] * n * nlist
        for p in nprobes:
            t = v["s_per_scanned_code"] * p * n / nlist + v["s_per_centroid"] * nlist
            rows.append(
                {"kind": "ivf", "params": {"nlist": nlist, "nprobe": p}}
                | {"qps_1": 1.0 / t, "qps_2": v["speedup_2"] / t}
                | {"index_bytes": v["bytes_per_code"] * n + nlist * BITS // 8}
                | {"build_s": train_s + add_s, "train_s": train_s, "add_s": add_s}
                | {"recall": v["recall"].get(str(p))}
            )
    if "multihash" in model:
        h = model["multihash"]
        from index.binary import default_hash_params

        b, nhash = default_hash_params(BITS, n, "multihash")
        t = h["s_per_candidate"] * _mh_candidates(n, b, nhash)
        rows.append(
            {"kind": "multihash", "params": {"b": b, "nhash": nhash, "nflip": 1}}
            | {"qps_1": 1.0 / t, "qps_2": h["speedup_2"] / t}
            | {"index_bytes": h["bytes_per_code"] * n, "build_s": h["build_s_per_code"] * n}
            | {"recall": h["recall"]}
        )
    return rows


_COMPARED = ("qps_1", "qps_2", "index_bytes", "build_s", "train_s", "add_s", "recall")


def _errors(pred: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Relative error (measured / predicted − 1) of each predicted figure."""
    out = []
    for p in pred:
        m = next((r for r in rows if r["kind"] == p["kind"] and r["params"] == p["params"]), None)
        if m is None:
            continue
        err = {
            f: m[f] / p[f] - 1.0 for f in _COMPARED if p.get(f) and m.get(f) is not None and f in m
        }
        out.append({"kind": p["kind"], "params": p["params"], "error": err})
    return out


def _fmt_row(n: int, r: dict[str, Any], tag: str) -> str:
    par = ",".join(f"{k}={v}" for k, v in r["params"].items())
    if "qps_1" not in r:
        return f"{tag:9s} {n:>11,d} {r['kind']:9s} {par:22s} {r.get('note', '')}"
    bpc = r.get("index_bytes", float("nan")) / n
    rec = r.get("recall")
    rec_s = f"{rec:7.4f}" if rec is not None else "      -"
    return (
        f"{tag:9s} {n:>11,d} {r['kind']:9s} {par:22s} {bpc:8.2f} {r['build_s']:9.1f} "
        f"{r['qps_1']:10.1f} {r['qps_2']:10.1f} {rec_s}"
    )


def _table(doc: dict[str, Any]) -> str:
    head = f"{'':9s} {'N':>11s} {'kind':9s} {'params':22s} {'B/code':>8s} {'build s':>9s}"
    lines = [head + f" {'QPS 1c':>10s} {'QPS 2c':>10s} {'recall':>7s}"]
    for key in sorted(doc["sizes"], key=int):
        s = doc["sizes"][key]
        n = int(key)
        for r in s.get("predicted", []):
            lines.append(_fmt_row(n, r, "modelled"))
        for r in s.get("measured", {}).get("rows", []):
            lines.append(_fmt_row(n, r, "measured"))
    return "\n".join(lines)


def _machine() -> dict[str, Any]:
    import os

    import faiss

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "faiss": faiss.__version__}


def _save(doc: dict[str, Any], out: Path) -> None:
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    tmp.replace(out)


def _run(a: argparse.Namespace) -> dict[str, Any]:
    out = Path(a.out)
    doc: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {"sizes": {}}
    doc.setdefault("sizes", {})
    doc["machine"] = _machine()
    clock = _Clock(a.time_budget)
    for n in sorted(a.sizes):
        entry = doc["sizes"].setdefault(str(n), {})
        model = doc.get("model")
        if model and model["fitted_at_n"] < n and "predicted" not in entry:
            entry["predicted"] = predict(model, n, a.nprobe)
            entry["predicted_on"] = datetime.datetime.now().isoformat(timespec="seconds")
            _save(doc, out)  # the prediction is on disk before the measurement starts
        m = measure_size(n, a, clock)
        m["date"] = datetime.date.today().isoformat()
        entry["measured"] = m
        if "predicted" in entry:
            entry["error"] = _errors(entry["predicted"], m["rows"])
        if not model or n <= model["fitted_at_n"]:
            doc["model"] = fit_model(m)
            for big in a.predict:
                if big > n:
                    e = doc["sizes"].setdefault(str(big), {})
                    e["predicted"] = predict(doc["model"], big, a.nprobe)
                    e["predicted_on"] = datetime.datetime.now().isoformat(timespec="seconds")
        doc["skipped"] = clock.skipped
        _save(doc, out)
    return doc


def _ints(text: str) -> list[int]:
    return [int(float(t)) for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.scripts.bench_scaling", description=__doc__.splitlines()[0]
    )
    p.add_argument("--sizes", type=_ints, default=[1_000_000, 10_000_000])
    p.add_argument(
        "--predict",
        type=_ints,
        default=[10_000_000, 100_000_000, 1_000_000_000],
        help="sizes the model fitted at the smallest measured size predicts",
    )
    p.add_argument("--nprobe", type=_ints, default=[1, 8, 32], help="IVF nprobe values")
    p.add_argument("--nq", type=int, default=500, help="queries per timed batch")
    p.add_argument(
        "--train-per-list",
        type=int,
        default=64,
        help="IVF k-means sample: at most this many codes a list (FAISS's default is 256)",
    )
    p.add_argument("--codes-dir", default="/tmp/serve-bench", help="where codes-N.h5 may exist")
    p.add_argument("--workdir", default="/tmp/fghash-scaling", help="where missing codes go")
    p.add_argument("--hnsw-max-n", type=int, default=1_000_000)
    p.add_argument("--hnsw-budget", type=float, default=240.0, help="HNSW build seconds")
    p.add_argument("--time-budget", type=float, default=900.0, help="seconds for the run")
    p.add_argument("--out", default="scaling.json", help="JSON (read, extended, rewritten)")
    a = p.parse_args(argv)
    doc = _run(a)
    print(_table(doc))
    for s in doc["sizes"].values():
        for e in s.get("error", []):
            print("error", e["kind"], e["params"], {k: f"{v:+.0%}" for k, v in e["error"].items()})
    if doc.get("skipped"):
        print("skipped (time budget):", "; ".join(doc["skipped"]))


if __name__ == "__main__":
    main()
