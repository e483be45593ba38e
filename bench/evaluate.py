"""Retrieval quality of one codes file: Hamming ranking and the exact float baseline.

The query split is ranked against the database split (ADSH/A²-Net protocol). Without
labels there is no mAP (relevance comes from labels): only the exact per-distance
counts are kept, which the k-NN recall of approximate indexes still needs. Without
``features`` there is no float baseline. Both cases are reported in ``notes``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fghash.codes import CodesFile, read_attrs, read_codes
from fghash.errors import FghashError, escape_bytes
from fghash.eval.metrics import TIES, summarize
from fghash.eval.ranking import DEFAULT_CHUNK_BYTES, RankingStats, rank_float_metrics, rank_hamming

__all__ = [
    "CodesEval",
    "check_bench_file",
    "load_for_bench",
    "dataset_name",
    "evaluate_codes",
    "ranking_device",
]

logger = logging.getLogger(__name__)

_DATASET_KEYS = ("dataset", "data_set", "dataset_name")


@dataclass
class CodesEval:
    """Quality figures of one codes file (``quality`` maps ranking name → metrics)."""

    path: str
    bits: int
    method: str
    dataset: str
    n_query: int
    n_database: int
    labels: str | None  # "single", "multi-hot" or None
    features: dict[str, Any] | None  # {"dim", "kind"} or None
    notes: list[str] = field(default_factory=list)
    quality: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    hamming: RankingStats | None = None  # not serialized

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "bits": self.bits,
            "method": self.method,
            "dataset": self.dataset,
            "n_query": self.n_query,
            "n_database": self.n_database,
            "labels": self.labels,
            "features": self.features,
            "notes": list(self.notes),
            "quality": self.quality,
            "timings_s": self.timings_s,
        }


def check_bench_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Cheap check (header only) that ``path`` is a codes file with non-empty ``query``
    and ``database`` splits; returns its header (:func:`fghash.codes.file.read_attrs`)."""
    head = read_attrs(path)
    splits = head["splits"]
    if "query" not in splits:
        raise FghashError(
            f"{path} has no query split; benchmarks rank the query split against the database "
            "split, so encode the test images as 'query'."
        )
    if splits["query"]["n"] == 0 or splits["database"]["n"] == 0:
        raise FghashError(f"{path} has an empty query or database split; nothing to benchmark.")
    return head


def load_for_bench(path: str | os.PathLike[str]) -> CodesFile:
    """Read a codes file that has the ``query`` and ``database`` splits a benchmark needs."""
    check_bench_file(path)
    return read_codes(path, splits=["query", "database"], features=True, attributes=False)


def dataset_name(cf: CodesFile) -> str:
    """The data set a codes file was made from: its config's ``dataset`` (also nested
    one level, e.g. ``{"data": {"dataset": ...}}`` or ``{"data": {"name": ...}}``), else
    the file name."""
    cfg = cf.config or {}
    for key in _DATASET_KEYS:
        if isinstance(cfg.get(key), str):
            return cfg[key]
    for sub in cfg.values():
        if isinstance(sub, dict):
            for key in (*_DATASET_KEYS, "name"):
                if isinstance(sub.get(key), str):
                    return sub[key]
    return escape_bytes(Path(cf.path).stem) if cf.path else "unknown"  # a title, any locale


def ranking_device(device: str) -> str:
    """Where the Hamming ranking runs for ``--device``: ``cpu`` → numpy on the CPU;
    ``gpu``/``cuda`` → torch on the GPU; ``auto`` → the GPU when FAISS sees one and torch
    can use it (torch is not imported otherwise), else the CPU."""
    if device in ("gpu", "cuda"):
        return "cuda"
    if device == "auto":
        from index.gpu import gpu_available

        if gpu_available():
            import torch

            if torch.cuda.is_available():
                return "cuda"
        return "cpu"
    if device != "cpu":
        raise FghashError(f"device must be auto, cpu or gpu, got {device!r}.")
    return "cpu"


def _torch_ranking(device: str) -> Callable[..., RankingStats]:
    """:func:`fghash.eval.ranking_torch.rank_hamming_torch` on the GPU, called like
    :func:`rank_hamming` (its blocks are sized from the free GPU memory instead)."""
    from fghash.eval.ranking_torch import rank_hamming_torch

    def rank(*args: Any, chunk_bytes: int | None = None, **kw: Any) -> RankingStats:
        logger.info("Hamming ranking on %s with torch", device)
        return rank_hamming_torch(*args, device=device, **kw)

    return rank


def _describe(cf: CodesFile) -> CodesEval:
    """What ``cf`` holds, before any ranking, with a logged note for each figure that its
    splits cannot give (no labels: no mAP; no features: no float baseline)."""
    q, db = cf["query"], cf["database"]
    where = str(cf.path or "codes file")
    labelled = q.labels is not None and db.labels is not None
    has_features = q.features is not None and db.features is not None
    ev = CodesEval(
        path=where,
        bits=cf.bits,
        method=cf.method,
        dataset=dataset_name(cf),
        n_query=len(q),
        n_database=len(db),
        labels=("multi-hot" if q.multilabel else "single") if labelled else None,
        features=(
            {"dim": int(db.features.shape[1]), "kind": db.features_kind} if has_features else None
        ),
    )
    if not labelled:
        ev.notes.append(
            f"{where} has no labels in the query and database splits: mAP, precision and "
            "recall need labels, so only speed and k-NN recall are reported."
        )
    if not has_features:
        ev.notes.append(
            f"{where} has no features in the query and database splits: no exact float "
            "baseline (IndexFlatIP/IndexFlatL2) is reported."
        )
    for note in ev.notes:
        logger.warning(note)
    return ev


def evaluate_codes(
    cf: CodesFile,
    ks: Sequence[int] = (1, 10, 100),
    *,
    ties: Sequence[str] = TIES,
    float_metrics: Sequence[str] = ("ip", "l2"),
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: bool | None = None,
    phase: Callable[[str], AbstractContextManager[Any]] | None = None,
    device: str = "cpu",
) -> CodesEval:
    """Rank ``query`` against ``database`` and compute every metric (see :mod:`fghash.eval.metrics`).

    ``phase(name)``, when given, wraps the ``"hamming ranking"`` and ``"float ranking"``
    steps (:class:`bench.progress.Phases`); the float ranking is skipped (no call) when
    there are no labels or features. ``device``: where the Hamming ranking runs
    (:func:`ranking_device`); on a GPU it is :func:`fghash.eval.ranking_torch.rank_hamming_torch`,
    same results.
    """
    phase = phase or (lambda name: nullcontext())
    q, db = cf["query"], cf["database"]
    ev = _describe(cf)
    labelled, has_features = ev.labels is not None, ev.features is not None
    kmax = min(max(ks), len(db))
    t0 = time.perf_counter()
    where_rank = ranking_device(device)
    rank = rank_hamming if where_rank == "cpu" else _torch_ranking(where_rank)
    with phase("hamming ranking"):
        ev.hamming = rank(
            q.codes,
            db.codes,
            cf.bits,
            q.labels if labelled else None,
            db.labels if labelled else None,
            stable="stable" in ties,
            kmax=kmax,
            chunk_bytes=chunk_bytes,
            progress=progress,
        )
    ev.timings_s["hamming_ranking"] = time.perf_counter() - t0
    if labelled:
        ev.quality["hamming"] = summarize(ev.hamming, ks, ties)
        if has_features and float_metrics:
            t0 = time.perf_counter()
            with phase("float ranking"):
                stats = rank_float_metrics(
                    q.features,
                    db.features,
                    q.labels,
                    db.labels,
                    tuple(float_metrics),
                    kmax=kmax,
                    chunk_bytes=chunk_bytes,
                    progress=progress,
                )
            ev.timings_s["float_ranking"] = time.perf_counter() - t0
            for metric, fs in stats.items():
                ev.quality[f"float-{metric}"] = summarize(fs, ks, ("stable",))
    return ev
