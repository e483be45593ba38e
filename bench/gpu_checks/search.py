"""Section ``search``: the tensor engine against ``GpuIndexBinaryFlat``, and GPU mAP.

Runs :func:`bench.scripts.bench_gpu_search.main` (1M and 10M codes × 48 and 64 bits,
k = 10, 100, 1,000 and 5,000, 10,000 queries; ``GpuIndexBinaryFlat`` rows when faiss-gpu
imports, its absence recorded otherwise), then tie-aware mAP at Food-101 size
(25,250 queries against 75,750 items, 48 bits, 101 classes) by
:func:`fghash.eval.ranking_torch.rank_hamming_torch`: goal ≤ :data:`MAP_GOAL_S` seconds.

``faster``: for each size × bits × k where both engines ran, the one with the higher
QPS. These are the figures ``index.tensor.pick_engine`` is to follow on the GPU
(today it prefers FAISS wherever FAISS can serve the request).
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAP_GOAL_S", "FULL_ARGS", "TINY_ARGS", "faster_engine", "check"]

MAP_GOAL_S = 1.0  # tie-aware mAP at Food-101 size on one GPU (issue 19)

FULL_ARGS = (
    "--sizes 1000000,10000000 --bits 48,64 --k 10,100,1000,5000 --nq 10000 "
    "--methods bincount --no-topk --runs 2 --row-seconds 4 --map-size 25250,75750"
)
TINY_ARGS = (
    "--sizes 2000 --bits 48,64 --k 10,100,1000 --nq 50 --methods bincount --no-topk "
    "--runs 1 --row-seconds 0.2 --check 5 --map-size 200,1000"
)


def faster_engine(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (n, bits, k) with a ``faiss-gpu`` row: both QPS and the faster engine."""
    best: dict[tuple[int, int, int], dict[str, Any]] = {}
    for r in rows:
        key = (r["n"], r["bits"], r["k"])
        slot = best.setdefault(key, {"n": r["n"], "bits": r["bits"], "k": r["k"]})
        name = "faiss" if r["engine"] == "faiss-gpu" else "tensor"
        slot[f"{name}_qps"] = max(slot.get(f"{name}_qps", 0.0), r["qps"])
    out = []
    for slot in best.values():
        if "faiss_qps" in slot and "tensor_qps" in slot:
            slot["faster"] = "tensor" if slot["tensor_qps"] > slot["faiss_qps"] else "faiss"
            out.append(slot)
    return out


def check(tiny: bool, device: str) -> dict[str, Any]:
    from bench.scripts.bench_gpu_search import main

    args = ["--device", device, *(TINY_ARGS if tiny else FULL_ARGS).split()]
    res = main(args)
    tie_aware = [r for r in res["map"] if not r["stable_too"]]
    map_s = min(r["s"] for r in tie_aware)
    return {
        "args": " ".join(args),
        "gpu": res["gpu"],
        "faiss": res["faiss"],
        "notes": res["notes"],
        "exact_vs_brute_force": all(
            r["exact_vs_brute_force"] for r in res["search"] if "exact_vs_brute_force" in r
        ),
        "search": res["search"],
        "map": res["map"],
        "map_tie_aware_s": map_s,
        "map_goal_s": None if tiny else MAP_GOAL_S,
        "map_goal_met": None if tiny else map_s <= MAP_GOAL_S,
        "faster": faster_engine(res["search"]),
    }
