"""The demo's final mAP over seeds × thread counts: does training leave its plateau every time?

Runs the ``fghash demo`` configuration (:class:`fghash.demo.DemoConfig`, data and
training seeded by ``--seed``) once per seed and thread count, each in its own Python
process (``OMP_NUM_THREADS`` and torch's thread count set before torch starts), and
prints one row per run (seed, threads, tie-aware and stable mAP@all of the learned codes,
seconds) and the minimum and median tie-aware mAP. The JSON (``OUT/demo_seeds.json``) is
rewritten after every run, so an interrupted table keeps the rows it finished.

    python -m bench.scripts.bench_demo_seeds --seeds 0-4 --threads 1,2 --out DIR
        [--max-iter N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "parse_range", "run_one", "summarise"]

RESULT = "demo_seeds.json"


def parse_range(text: str) -> list[int]:
    """``"0-4"`` → 0..4, ``"1,2"`` → [1, 2], ``"0-2,7"`` → [0, 1, 2, 7]."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def run_one(seed: int, threads: int, out: Path, max_iter: int | None, quick: bool) -> dict:
    """One demo (in this process): the row of the table."""
    from fghash.demo import DemoConfig, demo
    from fghash.util import threads as runtime

    runtime.set_threads(threads)
    config = (DemoConfig.quick() if quick else DemoConfig()).replace(seed=seed, max_iter=max_iter)
    t0 = time.perf_counter()
    report = demo(config, out, force=True)
    return {
        "seed": seed,
        "threads": threads,
        "map_tie_aware": report.quality.map_hamming,
        "map_stable": report.quality.map_hamming_stable,
        "chance": report.quality.chance,
        "seconds": round(time.perf_counter() - t0, 1),
        "training_seconds": round(report.seconds["training"], 1),
        "max_iter": config.max_iter,
    }


def summarise(rows: list[dict]) -> dict[str, float]:
    """Minimum and median tie-aware mAP of the finished rows."""
    maps = [r["map_tie_aware"] for r in rows if "map_tie_aware" in r]
    if not maps:
        return {}
    return {"min": min(maps), "median": statistics.median(maps), "runs": len(maps)}


def _child(seed: int, threads: int, folder: Path, a: argparse.Namespace) -> dict:
    """Run one row in a fresh interpreter, so that the thread count applies from the start."""
    cmd = [sys.executable, "-m", "bench.scripts.bench_demo_seeds", "--one", str(seed)]
    cmd += ["--threads", str(threads), "--out", str(folder)]
    cmd += ["--max-iter", str(a.max_iter)] if a.max_iter else []
    cmd += ["--quick"] if a.quick else []
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"seed": seed, "threads": threads, "error": " | ".join(tail)}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["process_seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _print_row(r: dict) -> None:
    if "error" in r:
        print(f"{r['seed']:>4}  {r['threads']:>7}  failed: {r['error']}", flush=True)
        return
    print(
        f"{r['seed']:>4}  {r['threads']:>7}  {r['map_tie_aware']:>13.4f}  "
        f"{r['map_stable']:>9.4f}  {r['seconds']:>7.1f}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        prog="python -m bench.scripts.bench_demo_seeds", description=__doc__.splitlines()[0]
    )
    p.add_argument("--seeds", default="0-4", help="seeds, e.g. 0-4 or 0,3 [0-4]")
    p.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2 [1,2]")
    p.add_argument("--out", type=Path, required=True, help="folder for the runs and the JSON")
    p.add_argument("--max-iter", type=int, default=None, help="outer iterations [the demo's]")
    p.add_argument("--quick", action="store_true", help="the tiny demo (fghash demo --quick)")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child mode
    a = p.parse_args(argv)

    if a.one is not None:
        row = run_one(a.one, int(a.threads), a.out, a.max_iter, a.quick)
        print(json.dumps(row))
        return row

    from fghash.util.atomic import atomic_write_text

    a.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    result: dict[str, Any] = {"seeds": a.seeds, "threads": a.threads, "rows": rows}
    print("seed  threads  mAP tie-aware  mAP stable  seconds", flush=True)
    for seed in parse_range(a.seeds):
        for threads in parse_range(a.threads):
            row = _child(seed, threads, a.out / f"seed{seed}-threads{threads}", a)
            rows.append(row)
            _print_row(row)
            result["summary"] = summarise(rows)
            atomic_write_text(a.out / RESULT, json.dumps(result, indent=2) + "\n")
    s = result.get("summary") or {}
    if s:
        print(f"tie-aware mAP over {s['runs']} runs: min {s['min']:.4f}, median {s['median']:.4f}")
    return result


if __name__ == "__main__":
    main()
