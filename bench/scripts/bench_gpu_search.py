"""Exact binary k-NN on a GPU: FAISS ``GpuIndexBinaryFlat`` against the tensor engine.

One run times, for every database size × code length × k (random codes, the same
queries for every engine):

* ``faiss-gpu``: ``GpuIndexBinaryFlat`` (k ≤ 2048), when the installed FAISS has GPU
  support — skipped with a note otherwise (the script needs only torch and numpy);
* ``tensor/count/<method>``: :class:`index.tensor.TensorIndex` (±1 fp16 products and
  two-pass counting selection), for each histogram method of :mod:`fghash.eval.hamming_torch`;
* ``tensor/stream/<method>``: the same engine with one-pass selection (the first block
  counted, later blocks only offer items below the running k-th distance), first method;
* ``topk``: the plain version, fp16 products and ``torch.topk`` per block (the issue's
  baseline; its order within ties is arbitrary).

It reports QPS (median of ``--runs`` after a warm-up; each run searches all queries and
copies the results to the host), whether the distances equal the tensor engine's
(``same_D``) and its positions too (``same_I``), the GPU memory the search held, and an
exact check of the tensor engine against brute force (numpy XOR + popcount, ties by
position) on a sample of queries. Then one line times the tie-aware and stable mAP
counts (:func:`fghash.eval.ranking_torch.rank_hamming_torch`) at Food-101 size.

GPU (the defaults are sized for a few minutes on one data-centre GPU; slow rows are
timed fewer times, ``--row-seconds``)::

    python -m bench.scripts.bench_gpu_search --out gpu_search.json

CPU smoke check (small sizes; CPU numbers say nothing about the GPU)::

    python -m bench.scripts.bench_gpu_search --device cpu --sizes 20000 --nq 200 \\
        --map-size 300,2000 --runs 1

``--out`` is rewritten (atomically) after every row, so a failure keeps every figure
measured before it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from fghash.util.atomic import atomic_write_text

__all__ = ["main"]

# bits set in each byte value: popcount on numpy < 2.0, which has no np.bitwise_count
_BYTE_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1)


def _popcount_rows(x: np.ndarray) -> np.ndarray:
    """Set bits of each row of an unsigned integer array, int32."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x).sum(axis=1, dtype=np.int32)
    return _BYTE_BITS[x.view(np.uint8)].sum(axis=1, dtype=np.int32)


def _codes(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    c = rng.integers(0, 256, (n, (bits + 7) // 8), dtype=np.uint8)
    if bits % 8:
        c[:, -1] &= np.uint8((1 << (bits % 8)) - 1)
    return c


def _brute_force(xq: np.ndarray, xb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN by XOR + popcount, ties by ascending position (independent of torch)."""
    pad = (-xb.shape[1]) % 8
    wq = np.pad(xq, ((0, 0), (0, pad))).view(np.uint64)
    wb = np.pad(xb, ((0, 0), (0, pad))).view(np.uint64)
    D = np.empty((len(xq), k), dtype=np.int32)
    I = np.empty((len(xq), k), dtype=np.int64)
    for i in range(len(xq)):
        d = _popcount_rows(wb ^ wq[i])
        kth = np.partition(d, k - 1)[k - 1]
        cand = np.flatnonzero(d <= kth)
        best = cand[np.argsort(d[cand], kind="stable")][:k]
        D[i], I[i] = d[best], best
    return D, I


class _Timer:
    """Median seconds of ``runs`` calls after a warm-up (fewer when one call is slow, so
    that a row takes about ``budget_s``), GPU synchronised, and the last result."""

    def __init__(self, runs: int, budget_s: float, dev: Any) -> None:
        self.runs, self.budget_s, self.dev = runs, budget_s, dev

    def sync(self) -> None:
        if self.dev.type == "cuda":
            import torch

            torch.cuda.synchronize(self.dev)

    def once(self, fn: Any, *args: Any, **kw: Any) -> tuple[float, Any]:
        self.sync()
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        self.sync()
        return time.perf_counter() - t0, out

    def __call__(self, fn: Any, *args: Any, **kw: Any) -> tuple[float, Any]:
        warm, out = self.once(fn, *args, **kw)
        times = []
        for _ in range(max(1, min(self.runs, int(self.budget_s / max(warm, 1e-9))))):
            t, out = self.once(fn, *args, **kw)
            times.append(t)
        return statistics.median(times), out


def _topk_search(xq: np.ndarray, bits: int, k: int, xb_op: Any, dev: Any) -> Any:
    """fp16 products + torch.topk per database block, merged: the plain baseline."""
    import torch

    from fghash.eval.hamming_torch import query_operand

    D = np.empty((len(xq), k), dtype=np.int32)
    I = np.empty((len(xq), k), dtype=np.int64)
    qb, block = 1024, 1 << 18
    for s in range(0, len(xq), qb):
        q = query_operand(xq[s : s + qb], bits, dev)
        best_d = best_i = None
        for b in range(0, xb_op.shape[0], block):
            d = q @ xb_op[b : b + block].T
            v, i = torch.topk(d, min(k, d.shape[1]), dim=1, largest=False)
            i = i + b
            if best_d is not None:
                v, j = torch.topk(torch.cat([best_d, v], 1), k, dim=1, largest=False)
                i = torch.cat([best_i, i], 1).gather(1, j)
            best_d, best_i = v, i
        D[s : s + qb] = best_d.to(torch.int32).cpu().numpy()
        I[s : s + qb] = best_i.cpu().numpy()
    return D, I


def _faiss_gpu() -> Any:
    try:
        import faiss
    except ImportError:
        return None, "FAISS is not installed: the GpuIndexBinaryFlat rows are skipped."
    if not hasattr(faiss, "GpuIndexBinaryFlat") or faiss.get_num_gpus() < 1:
        return None, "this FAISS has no GPU support: the GpuIndexBinaryFlat rows are skipped."
    return faiss, None


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


class _Memory:
    """Peak GPU memory held by torch during one row (None on CPU)."""

    def __init__(self, dev: Any) -> None:
        self.dev = dev

    def reset(self) -> None:
        if self.dev.type == "cuda":
            import torch

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.dev)

    def peak_gib(self) -> float | None:
        if self.dev.type != "cuda":
            return None
        import torch

        return round(torch.cuda.max_memory_allocated(self.dev) / 2**30, 2)


def _search_rows(
    a: argparse.Namespace,
    dev: Any,
    faiss: Any,
    timer: _Timer,
    rng: np.random.Generator,
    rows: list[dict[str, Any]],
    save: Any,
) -> list[dict[str, Any]]:
    """Append one row per engine × size × bits × k to ``rows``, calling ``save()`` after
    each."""
    import torch

    from fghash.eval.hamming_torch import database_operand
    from index.tensor import TensorIndex

    mem = _Memory(dev)
    memory = int(a.memory_gb * 2**30) if a.memory_gb else None
    methods = [m for m in a.methods.split(",") if m.strip()]
    variants = [("count", m) for m in methods] + [("stream", methods[0])] * (not a.no_stream)
    for bits in _ints(a.bits):
        xq = _codes(rng, a.nq, bits)
        for n in _ints(a.sizes):
            xb = _codes(rng, n, bits)
            gi = None
            if faiss is not None:
                res = faiss.StandardGpuResources()
                free0 = torch.cuda.mem_get_info(dev)[0]
                gi = faiss.GpuIndexBinaryFlat(res, -(-bits // 8) * 8)
                gi.add(np.pad(xb, ((0, 0), (0, gi.d // 8 - xb.shape[1]))))
                held = round((free0 - torch.cuda.mem_get_info(dev)[0]) / 2**30, 2)
            for k in _ints(a.k):
                base = {"n": n, "bits": bits, "k": k, "nq": a.nq}
                group: list[tuple[dict[str, Any], Any]] = []
                for sel, m in variants:
                    if m == "compare" and n > a.compare_max_n:
                        continue  # one pass per distance value: slow at this size
                    mem.reset()
                    ti = TensorIndex(
                        xb,
                        bits,
                        device=str(dev),
                        memory_bytes=memory,
                        count_method=m,
                        selection=sel,
                    )
                    t, out = timer(ti.search, xq, k)
                    row = {**base, "engine": f"tensor/{sel}/{m}", "s": t, "gpu_gib": mem.peak_gib()}
                    group.append(({**row, "blocks": list(ti.blocks(a.nq, k))}, out))
                    del ti
                if not group:
                    continue
                ref = group[0][1]
                bD, bI = _brute_force(xq[: a.check], xb, k)
                group[0][0]["exact_vs_brute_force"] = bool(
                    (ref[0][: a.check] == bD).all() and (ref[1][: a.check] == bI).all()
                )
                if gi is not None and k <= 2048:
                    qpad = np.pad(xq, ((0, 0), (0, gi.d // 8 - xq.shape[1])))
                    t, out = timer(gi.search, qpad, k)
                    group.append(({**base, "engine": "faiss-gpu", "s": t, "gpu_gib": held}, out))
                if not a.no_topk:
                    mem.reset()
                    xb_op = database_operand(xb, bits, dev)
                    t, out = timer(_topk_search, xq, bits, k, xb_op, dev)
                    group.append(
                        ({**base, "engine": "topk", "s": t, "gpu_gib": mem.peak_gib()}, out)
                    )
                    del xb_op
                for row, out in group[1:]:
                    row["same_D"] = bool((out[0] == ref[0]).all())
                    row["same_I"] = bool((out[1] == ref[1]).all())
                for row, _ in group:
                    row["qps"] = round(a.nq / row["s"], 1)
                    row["s"] = round(row["s"], 4)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    save()
    return rows


def _map_rows(
    a: argparse.Namespace,
    dev: Any,
    timer: _Timer,
    rng: np.random.Generator,
    rows: list[dict[str, Any]],
    save: Any,
) -> list[dict[str, Any]]:
    from fghash.eval.ranking_torch import rank_hamming_torch

    mem = _Memory(dev)
    nq, nb = _ints(a.map_size)
    ql, bl = rng.integers(0, 101, nq), rng.integers(0, 101, nb)
    q, b = _codes(rng, nq, 48), _codes(rng, nb, 48)
    for m in [m for m in a.methods.split(",") if m.strip()]:
        for stable in (False, True):
            mem.reset()
            t, _ = timer(
                rank_hamming_torch,
                q,
                b,
                48,
                ql,
                bl,
                stable=stable,
                kmax=100 if stable else 0,
                device=str(dev),
                count_method=m,
            )
            rows.append(
                {
                    "nq": nq,
                    "n": nb,
                    "bits": 48,
                    "classes": 101,
                    "method": m,
                    "stable_too": stable,
                    "s": round(t, 4),
                    "gpu_gib": mem.peak_gib(),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            save()
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        prog="python -m bench.scripts.bench_gpu_search", description=__doc__.splitlines()[0]
    )
    p.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (smoke check)")
    p.add_argument("--sizes", default="1000000,10000000", help="database sizes, comma-separated")
    p.add_argument("--bits", default="48,64", help="code lengths, comma-separated")
    p.add_argument("--k", default="10,100", help="k values, comma-separated")
    p.add_argument("--nq", type=int, default=10_000, help="queries")
    p.add_argument("--runs", type=int, default=3, help="timed runs after one warm-up")
    p.add_argument("--methods", default="bincount,compare", help="histogram methods to time")
    p.add_argument("--no-topk", action="store_true", help="skip the plain topk baseline")
    p.add_argument("--no-stream", action="store_true", help="skip the one-pass selection")
    p.add_argument(
        "--compare-max-n",
        type=int,
        default=1_000_000,
        help="search with the compare histogram only up to this database size",
    )
    p.add_argument("--check", type=int, default=20, help="queries checked against brute force")
    p.add_argument("--map-size", default="25250,75750", help="queries,database of the mAP line")
    p.add_argument("--memory-gb", type=float, help="engine working memory (default: half free)")
    p.add_argument(
        "--row-seconds",
        type=float,
        default=15.0,
        help="fewer timed runs when one run is slow, so a row takes about this long",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the results as JSON here too")
    a = p.parse_args(argv)

    import torch

    from fghash.eval.hamming_torch import torch_device

    dev = torch_device(a.device)
    cuda = dev.type == "cuda"
    faiss, note = _faiss_gpu() if cuda else (None, "CPU smoke check: no FAISS GPU rows.")
    timer = _Timer(a.runs, a.row_seconds, dev)
    rng = np.random.default_rng(a.seed)
    out = {
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if cuda else None,
        "torch": torch.__version__,
        "faiss": getattr(faiss, "__version__", None),
        "machine": platform.processor() or platform.machine(),
        "runs": a.runs,
        "notes": [note] if note else [],
        "search": [],
        "map": [],
    }

    def save() -> None:
        if a.out:
            atomic_write_text(a.out, json.dumps(out, indent=1) + "\n")

    save()
    _search_rows(a, dev, faiss, timer, rng, out["search"], save)
    _map_rows(a, dev, timer, rng, out["map"], save)
    for n in out["notes"]:
        print("note:", n)
    return out


if __name__ == "__main__":
    main()
