"""``fghash demo``, the whole chain: the learning half (:mod:`fghash.demo.learn`), then an
exact binary index, a few searches, and mAP and speed against exact float search.

Each phase is timed (wall clock, seconds) so the summary can say where the time went.
The speed table runs FAISS on one thread: a search of a few hundred codes is over
before a second OpenMP thread wakes, so more threads would measure the wake-up.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fghash.demo.learn import DemoConfig, DemoResult, run_demo

__all__ = ["DemoReport", "SEARCH_QUERIES", "demo"]

SEARCH_QUERIES = 3  # test images searched and shown

log = logging.getLogger(__name__)


@dataclass
class DemoReport:
    """Everything :func:`demo` made and measured."""

    learned: DemoResult  # data, run, codes file (and their phase times)
    bundle: Path  # OUT/index
    k: int  # neighbours shown per search
    searches: list[dict[str, Any]]  # :func:`index.search_bundle` rows of the first queries
    quality: Any  # :class:`bench.quick.QuickReport`: mAP, chance, speed
    seconds: dict[str, float]  # phase -> seconds: data, training, encoding, index, ...
    torch_version: str
    threads: str  # compute threads used (:func:`fghash.util.threads.thread_summary`)


def demo(
    config: DemoConfig,
    out: str | os.PathLike[str] = "fghash-demo",
    *,
    device: str = "auto",
    force: bool = False,
    step: Callable[[str], None] | None = None,
) -> DemoReport:
    """Run the whole demo in ``out``: :func:`run_demo`, then build ``out/index``
    (IndexBinaryFlat), search it with the first test images and evaluate the codes file.

    ``device`` (``auto|cpu|cuda``) is where the network runs and the index is built;
    the searches and the speed table run on the CPU. ``step`` gets one line per phase.
    """
    import torch

    from bench.quick import quick_report
    from fghash.util import threads as runtime
    from index import build_bundle, search_bundle

    say = step or (lambda line: log.info("%s", line))
    res = run_demo(config, out, device=device, force=force, step=step)
    seconds = dict(res.seconds)

    bundle = Path(out) / "index"
    say(f"[index] exact binary index (IndexBinaryFlat) -> {bundle}")
    t0 = time.perf_counter()
    build_bundle(
        res.codes_path, bundle, device="gpu" if device == "cuda" else device, overwrite=True
    )
    seconds["index"] = time.perf_counter() - t0

    k = min(5, res.n_train)
    say(f"[search] the first {min(SEARCH_QUERIES, res.n_test)} test images, top {k}")
    t0 = time.perf_counter()
    searches = search_bundle(bundle, k, codes=res.codes_path, limit=SEARCH_QUERIES, device="cpu")
    seconds["search"] = time.perf_counter() - t0

    say("[evaluate] mAP and speed")
    t0 = time.perf_counter()
    quality = quick_report(res.codes_path, k=min(10, res.n_train), threads=1)
    seconds["eval"] = time.perf_counter() - t0
    return DemoReport(
        learned=res,
        bundle=bundle,
        k=k,
        searches=searches,
        quality=quality,
        seconds=seconds,
        torch_version=str(torch.__version__),
        threads=runtime.thread_summary(),
    )
