"""Section ``ivf``: the GPU IVF engine (:mod:`index.tensor_ivf`) against FAISS CPU IVF and
exact GPU search.

Clustered 64-bit codes (10M, and 100M when the GPU and the host hold them), ``nlist``
4,096, ``nprobe`` 1/8/32/128, ``k`` 10 and 100, 10,000 queries. Rows:

* ``gpu-ivf``: :class:`index.tensor_ivf.TensorIVF` — QPS, tie-aware recall@k against the
  exact answer, and (where FAISS imports) whether every row equals FAISS CPU's;
* ``faiss-cpu-ivf``: FAISS's ``IndexBinaryIVF`` on all cores, same index, same ``nprobe``;
* ``tensor-exact`` (:class:`index.tensor.TensorIndex`) and ``faiss-gpu-flat``
  (``GpuIndexBinaryFlat``, where faiss-gpu imports): exact search, recall 1.

Without FAISS (the GPU machine may have none) the inverted file is built here instead —
centroids sampled from the codes, each code in its nearest list (ties to the lowest
list, as FAISS assigns) — and the FAISS rows are skipped with the reason. Goals (issue
23): ``gpu-ivf`` ≥ 10× ``faiss-cpu-ivf``'s QPS at equal ``nprobe``; at 100M a better
recall-vs-QPS front than exact GPU search. ``--tiny``: a few thousand codes on the CPU.

Tie-aware recall@k: the share of the ``k`` returned items whose distance is at most the
exact ``k``-th distance (a tie swapped for another is not a miss).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

__all__ = ["FULL", "TINY", "check", "clustered_codes", "tie_aware_recall"]

FULL = {"sizes": (10_000_000, 100_000_000), "bits": 64, "nlist": 4096, "nq": 10_000,
        "nprobes": (1, 8, 32, 128), "ks": (10, 100), "centers": 20_000}  # fmt: skip
TINY = {"sizes": (3000,), "bits": 64, "nlist": 16, "nq": 50, "nprobes": (1, 4, 16),
        "ks": (10, 100), "centers": 40}  # fmt: skip
_FLIP = 0.12  # share of bits flipped around a cluster centre


def clustered_codes(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    """``n`` packed codes, each a random centre with ``_FLIP`` of its bits flipped."""
    bits = centres.shape[1] * 8
    out = np.empty((n, centres.shape[1]), dtype=np.uint8)
    for s in range(0, n, 1 << 20):
        m = min(1 << 20, n - s)
        noise = np.packbits(rng.random((m, bits), dtype=np.float32) < _FLIP, axis=1, bitorder="little")  # fmt: skip
        out[s : s + m] = centres[rng.integers(0, len(centres), m)] ^ noise
    return out


def tie_aware_recall(D: np.ndarray, D_exact: np.ndarray) -> float:
    """Mean share of returned items at most the exact k-th distance away."""
    kth = D_exact[:, -1:]
    return float(((D <= kth) & (D >= 0)).sum() / D.size)


def _timed(fn: Any, dev: Any) -> tuple[float, Any]:
    from bench.gpu_checks._common import sync

    sync(dev)
    t0 = time.perf_counter()
    out = fn()
    sync(dev)
    return time.perf_counter() - t0, out


def _faiss() -> tuple[Any, Any, str | None]:
    """(faiss or None, GPU-capable faiss or None, why the FAISS rows are missing)."""
    try:
        import faiss
    except ImportError:
        return None, None, "FAISS does not import here: no FAISS rows; the IVF is built by torch."
    gpu = faiss if hasattr(faiss, "GpuIndexBinaryFlat") and faiss.get_num_gpus() > 0 else None
    return faiss, gpu, None if gpu else "FAISS has no GPU support here: no faiss-gpu-flat rows."


def _torch_ivf(xb: np.ndarray, bits: int, nlist: int, device: str, rng: np.random.Generator) -> Any:
    """A :class:`TensorIVF` built without FAISS: sampled centroids, nearest-list assignment."""
    from index.tensor_ivf import TensorIVF

    cents = xb[rng.choice(len(xb), nlist, replace=False)]
    probe = TensorIVF(cents, cents, np.arange(nlist), np.ones(nlist, np.int64), bits, device=device)
    assign = np.concatenate(
        [probe._coarse(xb[s : s + 65536], 1)[:, 0].cpu().numpy() for s in range(0, len(xb), 65536)]
    )
    order = np.argsort(assign, kind="stable")
    sizes = np.bincount(assign, minlength=nlist)
    return TensorIVF(cents, xb[order], order, sizes, bits, device=device)


def _faiss_ivf(faiss: Any, xb: np.ndarray, bits: int, nlist: int, rng: np.random.Generator) -> Any:
    q = faiss.IndexBinaryFlat(bits)
    fi = faiss.IndexBinaryIVF(q, bits, nlist)
    fi.train(xb[rng.choice(len(xb), min(len(xb), 64 * nlist), replace=False)])
    fi.add(xb)
    return fi


def _fits(n: int, bits: int, device: str) -> str | None:
    """Why ``n`` codes do not fit (the exact operand ``~2·(bits+8)`` bytes a code on the GPU,
    codes and ids, host copies), or None."""
    need_gpu = n * (2 * (bits + 8) + bits // 8 + 8) * 1.5
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info()
        if need_gpu > free:
            return (
                f"{n} codes need ~{need_gpu / 2**30:.0f} GiB of GPU memory; {free / 2**30:.0f} free"
            )
    avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if n * (bits // 8 + 8) * 6 > avail:
        return f"{n} codes need more host memory than the {avail / 2**30:.0f} GiB available"
    return None


def _size_rows(n: int, p: dict[str, Any], device: str, rng: np.random.Generator) -> dict[str, Any]:
    """Every row for one database size."""
    from index.tensor import TensorIndex
    from index.tensor_ivf import TensorIVF

    faiss, faiss_gpu, note = _faiss()
    bits, nlist = p["bits"], p["nlist"]
    centres = np.packbits(rng.random((p["centers"], bits)) < 0.5, axis=1, bitorder="little")
    xb, xq = clustered_codes(rng, centres, n), clustered_codes(rng, centres, p["nq"])
    out: dict[str, Any] = {"n": n, "bits": bits, "nlist": nlist, "nq": p["nq"], "note": note}
    t0 = time.perf_counter()
    fi = _faiss_ivf(faiss, xb, bits, nlist, rng) if faiss else None
    ivf = TensorIVF.from_faiss(fi, bits, None, device) if fi else _torch_ivf(xb, bits, nlist, device, rng)  # fmt: skip
    out["build_s"] = round(time.perf_counter() - t0, 2)
    exact = TensorIndex(xb, bits, device=device)
    rows, truth = [], {}
    for k in p["ks"]:
        exact.search(xq[:8], k)  # warm-up
        t, (De, _) = _timed(lambda k=k, ex=exact: ex.search(xq, k), exact._dev)
        truth[k] = De
        rows.append({"engine": "tensor-exact", "k": k, "qps": p["nq"] / t, "recall": 1.0})
        if faiss_gpu is not None and k <= 2048:
            res = faiss_gpu.StandardGpuResources()
            g = faiss_gpu.GpuIndexBinaryFlat(res, bits)
            g.add(xb)
            t, _ = _timed(lambda g=g, k=k: g.search(xq, k), exact._dev)
            rows.append({"engine": "faiss-gpu-flat", "k": k, "qps": p["nq"] / t, "recall": 1.0})
            del g
    del exact
    if faiss is not None:
        faiss.omp_set_num_threads(os.cpu_count() or 1)
    for nprobe in p["nprobes"]:
        for k in p["ks"]:
            ivf.search(xq[:8], k, nprobe=nprobe)  # warm-up
            t, (D, I) = _timed(
                lambda k=k, nprobe=nprobe: ivf.search(xq, k, nprobe=nprobe), ivf._dev
            )
            row = {"engine": "gpu-ivf", "nprobe": nprobe, "k": k, "qps": p["nq"] / t,
                   "recall": tie_aware_recall(D, truth[k])}  # fmt: skip
            if fi is not None:
                fi.nprobe = nprobe
                tf, (Df, If) = _timed(lambda k=k: fi.search(xq, k), "cpu")
                row["equal_to_faiss_cpu"] = bool((D == Df).all() and (I == If).all())
                row["speedup_vs_faiss_cpu"] = tf / t
                rows.append({"engine": "faiss-cpu-ivf", "nprobe": nprobe, "k": k,
                             "qps": p["nq"] / tf, "recall": tie_aware_recall(Df, truth[k])})  # fmt: skip
            rows.append(row)
    out["rows"] = [{**r, "qps": round(r["qps"], 1)} for r in rows]
    return out


def check(tiny: bool, device: str) -> dict[str, Any]:
    p = TINY if tiny else FULL
    rng = np.random.default_rng(23)
    sizes: list[dict[str, Any]] = []
    for n in p["sizes"]:
        why = _fits(n, p["bits"], device)
        sizes.append({"n": n, "skipped": why} if why else _size_rows(n, p, device, rng))
    ivf_rows = [r for s in sizes for r in s.get("rows", []) if r["engine"] == "gpu-ivf"]
    equal = [r["equal_to_faiss_cpu"] for r in ivf_rows if "equal_to_faiss_cpu" in r]
    speed = [r["speedup_vs_faiss_cpu"] for r in ivf_rows if "speedup_vs_faiss_cpu" in r]
    return {
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()},
        "sizes": sizes,
        "equal_to_faiss_cpu": all(equal) if equal else None,
        "min_speedup_vs_faiss_cpu": round(min(speed), 2) if speed else None,
        "speedup_goal": None if tiny else 10.0,
    }
