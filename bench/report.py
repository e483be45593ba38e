"""``fghash bench``: quality, speed and size of one or more codes files, as a report.

For every codes file: the query split ranked against the database split (mAP@all,
mAP/precision/recall@k, tie-aware and stable, PR by Hamming radius, precision within
radius 2), the same for exact float search over ``features``, and the speed/size/
accuracy of every index configuration (:mod:`bench.throughput`). Writes to ``out_dir``:

* ``report.json`` – every figure, the settings, the machine (CPU model, cores, RAM)
  and software versions (torch only if already imported), and the FAISS thread count;
* ``report.md`` – the tables people read (:func:`render_markdown` of the JSON);
* PNG plots – ``pr_curves.png``, ``qps_recall_<tag>.png``, ``qps_map_<tag>.png`` and,
  for several codes files, ``map_vs_bits.png``.

An existing ``report.json`` is left alone unless ``force=True`` (ann-benchmarks habit:
results are expensive, reruns are explicit). Files are written to a temporary name and
renamed, so an interrupted run never leaves half a report. A run holds the folder's
writer lock (:func:`fghash.util.locks.writer_lock`) from its check of the folder to its
last file, ``report.json``; a run killed while writing leaves a marker
(:mod:`fghash.util.unfinished`), and the next run undoes its files before looking.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.evaluate import check_bench_file, evaluate_codes, load_for_bench
from bench.machine import machine_info, software_info
from bench.outdir import check_out_dir, cleanup_on_failure, start_report
from bench.progress import Phases
from bench.report_markdown import render_markdown
from bench.rerank import DEFAULT_OVERSAMPLE, check_oversample, measure_rerank
from bench.throughput import DEFAULT_SWEEPS, run_throughput
from fghash.codes import file_checksum
from fghash.errors import FghashError, escape_bytes
from fghash.eval.metrics import METRICS, TIES
from fghash.util.atomic import atomic_write_text
from fghash.util.faults import checkpoint
from fghash.util.locks import writer_lock
from fghash.util.unfinished import clear_unfinished, undo_unfinished

__all__ = [
    "REPORT_VERSION",
    "DEFAULT_KS",
    "BenchResult",
    "run_bench",
    "render_markdown",
]

logger = logging.getLogger(__name__)

REPORT_VERSION = 1
DEFAULT_KS = (1, 10, 100)  # @k metrics when --k is not given (those up to the database size)


@dataclass
class BenchResult:
    """What :func:`run_bench` wrote (or found, when ``skipped``)."""

    out_dir: Path
    report_json: Path
    report_md: Path
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: bool = False

    @property
    def paths(self) -> list[Path]:
        return [self.report_json, self.report_md, *self.plots]


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _check_settings(
    ks: Sequence[int],
    index_types: Sequence[str],
    runs: int,
    threads: int | None,
    latency_queries: int,
) -> None:
    if not ks or any(isinstance(k, bool) or int(k) < 1 for k in ks):
        raise FghashError(
            f"--k must be a list of positive integers such as 1,10,100, got {list(ks)}."
        )
    unknown = [t for t in index_types if t not in DEFAULT_SWEEPS]
    if unknown:
        raise FghashError(
            f"unknown index type(s) {', '.join(unknown)}; choose from {', '.join(DEFAULT_SWEEPS)}."
        )
    if runs < 1:
        raise FghashError(f"--runs must be at least 1, got {runs}.")
    if threads is not None and threads < 1:
        raise FghashError(f"--threads must be at least 1, got {threads}.")
    if latency_queries < 0:
        raise FghashError(f"--latency-queries must be 0 or more, got {latency_queries}.")


def _tags(paths: Sequence[Path]) -> list[str]:
    """Short unique names for plot files: the stem, else parent-stem, else numbered."""
    stems = [escape_bytes(p.stem) for p in paths]  # a name that is not UTF-8: \\xNN
    if len(set(stems)) == len(stems):
        return stems
    longer = [escape_bytes(f"{p.parent.name}-{p.stem}") for p in paths]
    if len(set(longer)) == len(longer):
        return longer
    return [f"{i}-{s}" for i, s in enumerate(stems)]


def run_bench(
    codes_paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    ks: Sequence[int] | None = None,
    force: bool = False,
    wait: float | None = 0,
    **options: Any,
) -> BenchResult:
    """Benchmark every codes file and write ``report.json``, ``report.md`` and plots.

    Checks first, before any long work: every file (a codes file with non-empty query
    and database splits), ``ks`` (at most the smallest database), and the folder
    (:func:`bench.outdir.check_out_dir`: a report of the same inputs is skipped with a
    note unless ``force``; another report or files fghash did not write are refused unless
    ``force``). ``ks`` defaults to those of :data:`DEFAULT_KS` the database can answer.
    A failed run removes what it wrote. ``options`` as :func:`_run_bench`.

    The folder's check and the whole run hold its writer lock (waiting up to ``wait``
    seconds for another writer, ``None``: for ever), so of two runs of different inputs
    into one folder the second is refused once the first is done; a killed run's files
    are undone first (:func:`fghash.util.unfinished.undo_unfinished`).
    """
    if not codes_paths:
        raise FghashError("give at least one codes file to benchmark.")
    paths = [Path(p) for p in codes_paths]
    heads = [check_bench_file(p) for p in paths]
    n_db = min(h["splits"]["database"]["n"] for h in heads)
    if ks is None:
        ks = [k for k in DEFAULT_KS if k <= n_db] or [n_db]
    elif ks and max(int(k) for k in ks) > n_db:
        small = paths[[h["splits"]["database"]["n"] for h in heads].index(n_db)]
        raise FghashError(
            f"--k {max(int(k) for k in ks)} is larger than the database of {small} "
            f"({n_db:,} items); use values of --k up to {n_db}."
        )
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)  # the lock file goes beside out
    with writer_lock(out, wait=wait, what=f"the report folder {out}"):
        if out.is_dir():
            undo_unfinished(out)
        res = BenchResult(out, out / "report.json", out / "report.md")
        if check_out_dir(out, lambda: [file_checksum(p) for p in paths], force=force):
            res.skipped = True
            res.notes.append(
                f"{res.report_json} already holds the report of these inputs; pass --force "
                "to run the benchmark again."
            )
            res.plots = sorted(out.glob("*.png"))
            return res
        with cleanup_on_failure(out):
            return _run_bench(paths, out, ks=ks, force=True, **options)


def _run_bench(
    codes_paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    index_types: Sequence[str] | None = None,
    ks: Sequence[int] = (1, 10, 100),
    threads: int | None = None,
    runs: int = 5,
    warmup: int = 1,
    latency_queries: int = 200,
    max_seconds: float | None = 5.0,
    hnsw_budget_s: float | None = 20.0,
    device: str = "auto",
    force: bool = False,
    command: str | None = None,
    progress: bool | None = None,
    oversample: Sequence[int] = DEFAULT_OVERSAMPLE,
) -> BenchResult:
    """The benchmark itself, once :func:`run_bench` has checked inputs and folder.

    ``index_types`` defaults to all kinds (:data:`bench.throughput.DEFAULT_SWEEPS`);
    ``threads`` is the FAISS thread count for every row (default: FAISS's own);
    ``runs`` timed batch runs after ``warmup``, and single-query latencies, each stop
    early past ``max_seconds`` per configuration; HNSW is built on the longest prefix of
    the database it can add in ``hnsw_budget_s`` (``None``: all of it; the report says
    which); ``device`` as in ``fghash build-index`` (``auto`` adds GPU rows when
    possible), and for the Hamming ranking (:func:`bench.evaluate.ranking_device`).
    ``command`` is recorded in the report. ``oversample``: the factors ``X`` of the
    re-ranked rows (files with float features; :mod:`bench.rerank`).

    Progress: one line per phase on stderr with an estimate of what is left
    (:class:`bench.progress.Phases`), whether or not stderr is a terminal; tqdm bars
    inside phases when it is. ``progress=False`` silences both.
    """
    if not codes_paths:
        raise FghashError("give at least one codes file to benchmark.")
    paths = [Path(p) for p in codes_paths]
    kinds = list(index_types) if index_types is not None else list(DEFAULT_SWEEPS)
    ks = sorted({int(k) for k in ks})
    _check_settings(ks, kinds, runs, threads, latency_queries)
    check_oversample(oversample)
    out = Path(out_dir)
    res = BenchResult(out, out / "report.json", out / "report.md")
    heads = [check_bench_file(p) for p in paths]  # header only, for the phase plan
    out.mkdir(parents=True, exist_ok=True)
    tags = _tags(paths)
    plan = _plan(heads, tags, kinds, runs, latency_queries, max_seconds, hnsw_budget_s)
    phases = Phases([p for file_plan in plan for p in file_plan], enabled=progress is not False)
    timing = dict(
        runs=runs,
        warmup=warmup,
        latency_queries=latency_queries,
        max_seconds=max_seconds,
        hnsw_budget_s=hnsw_budget_s,
    )
    report = _new_report(command, kinds, ks, device, timing)
    for path, tag, file_plan in zip(paths, tags, plan, strict=False):
        logger.info("benchmarking %s", path)
        named = _PhaseNames(phases, tag if len(paths) > 1 else None)
        entry, tp = _bench_file(
            path,
            ks,
            kinds,
            named,
            res.notes,
            threads=threads,
            device=device,
            progress=progress,
            oversample=oversample,
            **timing,
        )
        for name, _ in file_plan:  # phases this file did not need (no features, no labels)
            if name not in phases.done:
                phases.skip(name)
        entry.update(tag=tag, checksum=file_checksum(path), throughput=tp)
        report["codes"].append(entry)
    report["threads"] = report["codes"][0]["throughput"]["threads"]
    report["software"] = software_info()

    with phases.phase("plots and report"):
        _write_report(report, res, phases)
    return res


def _write_report(report: dict[str, Any], res: BenchResult, phases: Phases) -> None:
    """The plots, then ``report.md`` and, last, ``report.json`` (naming them, with the
    phase times), between the folder's unfinished marker and its removal."""
    start_report(res.out_dir)
    res.plots = _plots(report, res.out_dir)
    checkpoint("bench:after-plots")
    report["plots"] = [p.name for p in res.plots]
    report["phases_s"] = dict(phases.done)
    atomic_write_text(res.report_md, escape_bytes(render_markdown(report)))  # any file name
    checkpoint("bench:after-report-md")
    atomic_write_text(res.report_json, json.dumps(report, indent=1, default=_jsonable) + "\n")
    checkpoint("bench:after-report")
    clear_unfinished(res.out_dir)


def _new_report(
    command: str | None,
    kinds: Sequence[str],
    ks: Sequence[int],
    device: str,
    timing: dict[str, Any],
) -> dict[str, Any]:
    """The report before any codes file is measured: when, by what, on what, how."""
    return {
        "format": "fghash.bench",
        "version": REPORT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine_info(),
        "settings": {
            "index_types": list(kinds),
            "k": list(ks),
            "runs": timing["runs"],
            "warmup": timing["warmup"],
            "latency_queries": timing["latency_queries"],
            "max_seconds_per_config": timing["max_seconds"],
            "hnsw_build_budget_s": timing["hnsw_budget_s"],
            "device": device,
            "ties": list(TIES),
            "sweeps": {
                k: {"parameter": DEFAULT_SWEEPS[k][0], "values": list(DEFAULT_SWEEPS[k][1])}
                for k in kinds
            },
        },
        "metrics": {
            name: {"description": m.description, "higher_is_better": m.worst == float("-inf")}
            for name, m in METRICS.items()
        },
        "codes": [],
    }


def _bench_file(
    path: Path,
    ks: Sequence[int],
    kinds: Sequence[str],
    named: _PhaseNames,
    notes: list[str],
    *,
    threads: int | None,
    device: str,
    progress: bool | None,
    oversample: Sequence[int] = DEFAULT_OVERSAMPLE,
    **timing: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Quality (:func:`bench.evaluate.evaluate_codes`) and throughput of one codes file:
    its report entry without tag and checksum, and its throughput rows. ``notes`` grows."""
    with named("load"):
        cf = load_for_bench(path)
    ev = evaluate_codes(cf, ks, progress=progress, phase=named, device=device)
    notes.extend(ev.notes)
    q, db = cf["query"], cf["database"]
    labelled = ev.labels is not None
    tp = run_throughput(
        db.codes,
        q.codes,
        cf.bits,
        ks,
        exact_counts=ev.hamming.n,
        kinds=kinds,
        qlabels=q.labels if labelled else None,
        dblabels=db.labels if labelled else None,
        fb=db.features if ev.features else None,
        fq=q.features if ev.features else None,
        threads=threads,
        device=device,
        progress=progress,
        phase=named,
        **timing,
    )
    if ev.features:  # Hamming search then float re-ranking, beside binary and exact float
        tp["rows"] += measure_rerank(
            db.codes, q.codes, cf.bits, db.features, q.features, ks,
            oversample=oversample, floats_kind=ev.features["kind"], qlabels=q.labels if labelled else None,
            dblabels=db.labels if labelled else None, phase=named,
            **{k: v for k, v in timing.items() if k != "hnsw_budget_s"},
        )  # fmt: skip
    return ev.to_json(), tp


class _PhaseNames:
    """``phases.phase`` with the codes file's tag in front of each name (several files)."""

    def __init__(self, phases: Phases, tag: str | None) -> None:
        self.phases = phases
        self.prefix = f"{tag}: " if tag else ""

    def __call__(self, name: str) -> AbstractContextManager[None]:
        return self.phases.phase(self.prefix + name)


def _plan(
    heads: Sequence[dict[str, Any]],
    tags: Sequence[str],
    kinds: Sequence[str],
    runs: int,
    latency_queries: int,
    max_seconds: float | None,
    hnsw_budget_s: float | None,
) -> list[list[tuple[str, float]]]:
    """The phases of each codes file, then the report's, with a rough cost in seconds on
    two cores (:class:`bench.progress.Phases` rescales them by what it measures)."""
    cap = max_seconds if max_seconds is not None else float("inf")
    plans: list[list[tuple[str, float]]] = []
    for head, tag in zip(heads, tags, strict=True):
        plan: list[tuple[str, float]] = []
        plans.append(plan)
        pre = f"{tag}: " if len(heads) > 1 else ""
        sp = head["splits"]
        nq, n = sp["query"]["n"], sp["database"]["n"]
        bits = int(head["bits"])
        feats = sp["query"].get("features") and sp["database"].get("features")
        labelled = sp["query"].get("labels") and sp["database"].get("labels")
        dim = sp["database"]["features"]["dim"] if feats else 0
        pairs = nq * n
        plan.append((pre + "load", 0.2 + (nq + n) * (bits / 8 + 16 + 4 * dim) / 300e6))
        plan.append((pre + "hamming ranking", 0.2 + pairs * (3e-9 if labelled else 1e-9)))
        if feats and labelled:
            plan.append((pre + "float ranking", 0.2 + pairs * (dim * 2 / 40e9 + 6e-9)))
        search = pairs * 0.5e-9
        for kind in kinds:
            configs = len(DEFAULT_SWEEPS[kind][1])
            build = {
                "flat": 0.0,
                "ivf": min(n, 256 * max(1, int(n**0.5))) * n**0.5 * bits * 20 / 20e9,
                "hnsw": min(hnsw_budget_s or float("inf"), n * 6e-4),
                "hash": n * 3e-7,
                "multihash": n * 1e-6,
            }[kind]
            per_config = min(cap, (runs + 1) * search * (1 if kind == "flat" else 0.2))
            per_config += min(cap, latency_queries * n * 1e-9)
            plan.append((pre + f"index {kind}", 0.2 + build + configs * per_config))
        if feats:
            one = pairs * dim * 2 / 40e9
            per_metric = min(cap, (runs + 1) * one) + min(cap, latency_queries * n * dim * 4 / 10e9)
            plan.append((pre + "float search", 2 * (0.2 + per_metric)))
            rerank = min(cap, (runs + 1) * (search + nq * 1000 * dim * 8 / 10e9))
            plan.append((pre + "rerank", 0.2 + 6 * rerank))  # bench.rerank: 2 metrics x 3 X
    plans.append([("plots and report", 4.0)])
    return plans


def _plot_k(ks: Sequence[int]) -> int:
    return 10 if 10 in ks else max(ks)


def _plots(report: dict[str, Any], out: Path) -> list[Path]:
    from fghash.viz.plots import plot_map_vs_bits, plot_pr, plot_qps

    made: list[Path] = []
    curves = []
    for c in report["codes"]:
        pr = c["quality"].get("hamming", {}).get("pr_by_radius")
        if pr:
            curves.append((f"{c['tag']} ({c['bits']} bits)", pr["precision"], pr["recall"]))
    if curves:
        made.append(plot_pr(curves, out / "pr_curves.png"))
    k = _plot_k(report["settings"]["k"])
    for c in report["codes"]:
        rows = [r for r in c["throughput"]["rows"] if "qps" in r]
        if any(r["accuracy"].get(f"knn-recall@{k}") is not None for r in rows):
            made.append(
                plot_qps(
                    rows,
                    f"knn-recall@{k}",
                    out / f"qps_recall_{c['tag']}.png",
                    x_label=f"k-NN recall@{k} vs exact binary (ties counted)",
                    title=f"{c['tag']}: speed vs recall",
                )
            )
        if any(r["accuracy"].get(f"map@{k}") is not None for r in rows):
            made.append(
                plot_qps(
                    rows,
                    f"map@{k}",
                    out / f"qps_map_{c['tag']}.png",
                    x_label=f"mAP@{k} of returned results",
                    title=f"{c['tag']}: speed vs mAP",
                )
            )
    pts = [
        (f"{c['method']} (tie-aware)", c["bits"], c["quality"]["hamming"]["tie-aware"]["map@all"])
        for c in report["codes"]
        if "hamming" in c["quality"]
    ]
    if len(report["codes"]) > 1 and pts:
        made.append(plot_map_vs_bits(pts, out / "map_vs_bits.png"))
    return made
