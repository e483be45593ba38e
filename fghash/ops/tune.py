"""``fghash tune`` as a library call: read a codes file, measure (:mod:`index.tune`),
write the table, JSON and PNG, and print or run the ``fghash build-index`` command.

:func:`index.tune.tune` holds the measurement and the rule that picks; this module only
reads the sample, formats and writes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fghash.errors import FghashError

__all__ = ["Tuned", "build_args", "front_table", "load_sample", "parse_bytes", "run_tune"]

PathLike = str | os.PathLike[str]
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_bytes(text: str) -> int:
    """``2GB``, ``500 MB``, ``1.5GiB``, ``123`` → bytes (KB/MB/GB: powers of 1000,
    KiB/MiB/GiB: of 1024)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?)(b?)\s*", str(text), re.I)
    if not m or (m.group(3) and not m.group(2)):
        raise FghashError(f"--max-memory {text!r} is not a size; write it like 2GB, 500MB or 1GiB.")
    unit = m.group(2).lower()
    base = 1024 ** ("kmgt".index(unit) + 1) if m.group(3) else _UNITS[unit]
    return int(float(m.group(1)) * base)


def load_sample(
    path: PathLike, split: str, queries: int, sample: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """``(database sample, tuning queries, held-out queries, bits, N)`` from a codes file.

    Queries come from the file's ``query`` split when it has one (and ``split`` is not
    it), shuffled with ``seed`` and cut in two halves of up to ``queries`` each; else
    ``2 * queries`` database rows are held out of the sample as queries. The sample is
    at most ``sample`` rows drawn with ``seed`` (all rows when ``sample`` is None or the
    database is no larger).
    """
    from fghash.codes import SplitReader

    rng = np.random.default_rng(seed)
    qcodes = None
    with SplitReader(path, split) as r:
        bits, n = r.bits, r.n
        if split != "query":
            try:
                with SplitReader(path, "query") as rq:
                    qcodes = rq.read("codes") if rq.n >= 2 else None
            except FghashError:
                qcodes = None
        held = 0 if qcodes is not None else min(2 * queries, n // 2)
        order = rng.permutation(n)
        qrows = np.sort(order[:held])
        take = n - held if sample is None else min(sample, n - held)
        rows = np.sort(order[held : held + take])
        xb = _read_rows(r, rows)
        if qcodes is None:
            qcodes = _read_rows(r, qrows)
    if qcodes.shape[0] < 2:
        raise FghashError(f"{path} has too few items to tune on ({n}).")
    qcodes = qcodes[rng.permutation(qcodes.shape[0])]
    half = min(queries, qcodes.shape[0] // 2)
    return xb, qcodes[:half], qcodes[half : 2 * half], bits, n


def _read_rows(r: Any, rows: np.ndarray, block: int = 1 << 20) -> np.ndarray:
    """Codes at sorted ``rows`` of a split, read block by block."""
    parts = []
    for s, e in r.blocks(block):
        lo, hi = np.searchsorted(rows, [s, e])
        if hi > lo:
            parts.append(r.read("codes", s, e)[rows[lo:hi] - s])
    if not parts:
        return np.zeros((0, (r.bits + 7) // 8), dtype=np.uint8)
    return np.ascontiguousarray(np.concatenate(parts))


def build_args(p: Any, scale: float = 1.0) -> tuple[list[str], list[str]]:
    """``fghash build-index`` options and ``fghash search`` options for ``p``.

    ``scale = N / S`` (database over sample): ``nlist`` and ``nprobe`` grow with it, so
    that lists keep their size and a search scans the same share of the database.
    """
    b = [f"--type={p.kind}"]
    nlist = p.build.get("nlist")
    if nlist:
        b.append(f"--nlist={max(1, round(nlist * scale))}")
    if "hnsw_m" in p.build:
        b.append(f"--hnsw-m={p.build['hnsw_m']}")
    if "hash_b" in p.build:
        b.append(f"--hash-b={p.build['hash_b']}")
    if "nhash" in p.build:
        b.append(f"--nhash={p.build['nhash']}")
    s = []
    if "nprobe" in p.search:
        s.append(f"--nprobe={max(1, round(p.search['nprobe'] * scale))}")
    if "ef_search" in p.search:
        s.append(f"--ef-search={p.search['ef_search']}")
    if "nflip" in p.search:
        s.append(f"--nflip={p.search['nflip']}")
    if p.device != "cpu":
        s.append("--device=gpu")
    if p.engine == "tensor":
        s.append("--engine=tensor")
    return b, s


def front_table(result: Any) -> str:
    """The Pareto front (and the pick) as a Markdown table, best recall first."""
    from index.tune import human_bytes

    rows = [p for p in result.points if p.pareto or p is result.pick]
    rows.sort(key=lambda p: (-p.recall, -p.qps))
    k = result.constraints.k
    head = (
        f"| configuration | recall@{k} | QPS (1 thread) | ms/query | memory | build s | |\n"
        "|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for p in rows:
        mark = "pick" if p is result.pick else ("ok" if p.feasible else "")
        lines.append(
            f"| {p.label} | {p.recall:.4f} | {p.qps:,.0f} | {p.ms:.4g} | "
            f"{human_bytes(p.memory)} | {p.build_s:.2f} | {mark} |"
        )
    return "\n".join(lines)


@dataclass
class Tuned:
    """What :func:`run_tune` measured, chose, wrote and (with ``build``) built."""

    result: Any  # index.tune.TuneResult
    table: str  # the Pareto front, Markdown
    build_command: str  # fghash build-index ... for the pick ('' when none)
    search_options: str  # what fghash search needs to use the pick's parameters
    written: list[Path] = field(default_factory=list)
    built: Path | None = None


def run_tune(
    codes: PathLike,
    *,
    split: str = "database",
    k: int = 10,
    min_recall: float = 0.95,
    max_memory: int | None = None,
    max_ms: float | None = 1.0,
    queries: int = 500,
    sample: int | None = 1_000_000,
    seed: int = 0,
    time_budget: float | None = 150.0,
    out: PathLike | None = None,
    build: PathLike | None = None,
    force: bool = False,
) -> Tuned:
    """Measure every index kind on ``codes`` and choose one (:func:`index.tune.tune`).

    ``out``: a folder for ``tune.md`` (the table), ``tune.json`` (every point) and
    ``tune.png``. ``build``: build the pick's bundle there (:func:`index.build_bundle`,
    replacing one only with ``force``). When nothing meets the constraints the files are
    still written, then :class:`FghashError` says so in one sentence.
    """
    from index.tune import Constraints, tune

    if not Path(codes).exists():
        raise FghashError(f"{codes}: no such file.")
    if queries < 1:
        raise FghashError(f"--queries must be at least 1, got {queries}.")
    if build is not None and Path(build).exists() and not force:
        raise FghashError(f"--build {build} already exists; add --force to replace it.")
    xb, xq, xh, bits, n = load_sample(codes, split, queries, sample, seed)
    c = Constraints(k=k, min_recall=min_recall, max_memory=max_memory, max_ms=max_ms)
    result = tune(xb, xq, xh, bits, c, n_total=n, time_budget=time_budget, seed=seed)
    done = Tuned(result, front_table(result), "", "")
    if result.pick is not None:
        b_args, s_args = build_args(result.pick, result.n / result.sample)
        target = str(build) if build is not None else "INDEX"
        words = ["fghash", "build-index", str(codes), "--split", split, "--out", target, *b_args]
        done.build_command = shlex.join(words)
        done.search_options = shlex.join(s_args)
    if out is not None:
        done.written = _write(result, done.table, Path(out))
    if result.pick is None:
        raise FghashError(result.why)
    if build is not None:
        done.built = _build(codes, Path(build), split, result.pick, result.n / result.sample, force)
    return done


def _write(result: Any, table: str, out: Path) -> list[Path]:
    """tune.md, tune.json and tune.png in ``out`` (created)."""
    from fghash.util.atomic import atomic_path
    from fghash.viz.tune_plot import plot_tune

    out.mkdir(parents=True, exist_ok=True)
    d = result.as_dict()
    paths = []
    for name, text in (("tune.json", json.dumps(d, indent=1) + "\n"), ("tune.md", table + "\n")):
        with atomic_path(out / name, suffix=Path(name).suffix) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
        paths.append(out / name)
    title = f"fghash tune: {result.sample} of {result.n} codes, {result.bits} bits"
    png = plot_tune(
        d["points"],
        out / "tune.png",
        pick=d["pick"],
        k=result.constraints.k,
        min_recall=result.constraints.min_recall,
        title=title,
    )
    return [*paths, png]


def _build(codes: PathLike, out: Path, split: str, pick: Any, scale: float, force: bool) -> Path:
    """Build the pick's bundle at ``out``."""
    from index import build_bundle

    kw: dict[str, Any] = {k: v for k, v in pick.build.items() if k != "nlist"}
    nlist = pick.build.get("nlist")
    _, folder = build_bundle(
        codes,
        out,
        split=split,
        kind=pick.kind,
        overwrite=force,
        device="cpu",
        nlist=None if nlist is None else max(1, round(nlist * scale)),
        **kw,
    )
    return Path(folder)
