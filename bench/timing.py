"""Timing done properly: warm-up, repeated runs, medians and spread.

Like FAISS's ``RepeatTimer`` (``benchs/bench_fw``) and timm's ``benchmark.py``: the
first runs are thrown away (caches, lazy allocations, thread pools), then the block is
run several times and the median is reported with the minimum, maximum and all runs::

    timer = RepeatTimer(warmup=1, runs=5)
    for _ in timer:
        index.search(xq, k)
    timer.median  # seconds

``sync`` is called before a run ends (e.g. a CUDA synchronise) so asynchronous work is
counted; FAISS GPU search copies its results back to the host, so it needs none.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["RepeatTimer", "percentiles_ms"]


class RepeatTimer:
    """Iterate ``warmup + runs`` times, timing each non-warm-up iteration.

    Stops early (after at least one timed run) once the timed runs add up to more than
    ``max_seconds``, so slow configurations do not hold up a sweep. A warm-up run longer
    than ``max_seconds / 2`` is kept as the first timed run (start-up costs are noise
    against it) and ends the warm-up; :meth:`summary` reports the warm-ups actually run.
    """

    def __init__(
        self,
        warmup: int = 1,
        runs: int = 5,
        *,
        max_seconds: float | None = None,
        sync: Callable[[], Any] | None = None,
    ) -> None:
        if warmup < 0 or runs < 1:
            raise ValueError(f"need warmup >= 0 and runs >= 1, got {warmup} and {runs}")
        self.warmup = int(warmup)
        self.runs = int(runs)
        self.max_seconds = max_seconds
        self.sync = sync
        self.times: list[float] = []
        self.warmups_done = 0

    def __iter__(self) -> Iterator[int]:
        self.times = []
        self.warmups_done = 0
        for i in range(self.warmup):
            t0 = time.perf_counter()
            yield -1 - i
            if self.sync is not None:
                self.sync()
            took = time.perf_counter() - t0
            if self.max_seconds is not None and took > self.max_seconds / 2:
                # so long that start-up costs are noise: it is the first timed run
                self.times.append(took)
                break
            self.warmups_done += 1
        for i in range(len(self.times), self.runs):
            if self.max_seconds is not None and sum(self.times) > self.max_seconds:
                break
            t0 = time.perf_counter()
            yield i
            if self.sync is not None:
                self.sync()
            self.times.append(time.perf_counter() - t0)

    @property
    def median(self) -> float:
        """Median seconds of the timed runs."""
        return statistics.median(self.times)

    def summary(self) -> dict[str, Any]:
        """``{"median_s", "min_s", "max_s", "runs", "times_s"}`` for a report."""
        return {
            "median_s": self.median,
            "min_s": min(self.times),
            "max_s": max(self.times),
            "runs": len(self.times),
            "warmup": self.warmups_done,
            "times_s": list(self.times),
        }


def percentiles_ms(seconds: Sequence[float], qs: Sequence[float] = (50, 99)) -> dict[str, float]:
    """Percentiles of per-call times in milliseconds, as ``{"p50": ., "p99": .}``."""
    a = np.asarray(seconds, dtype=np.float64) * 1e3
    return {f"p{q:g}": float(np.percentile(a, q)) for q in qs}
