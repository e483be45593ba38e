"""PNG plots for benchmark reports (matplotlib, Agg backend, no display needed).

* precision–recall by Hamming radius, one curve per codes file;
* QPS against an accuracy metric, one series per index kind, with the Pareto frontier
  (ann-benchmarks style: a configuration is on the frontier when no other is both
  faster and more accurate);
* mAP against code length, one line per method, when several codes files are given.

Every plot is written to a temporary file and renamed, so a crash never leaves half a PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fghash.util.atomic import atomic_path

__all__ = ["pyplot", "save_figure", "pareto_frontier", "plot_pr", "plot_qps", "plot_map_vs_bits"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Save ``fig`` as a PNG atomically (temporary file, then rename) and close it."""
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        pyplot().close(fig)
    return path


def pareto_frontier(
    xs: Sequence[float], ys: Sequence[float], x_worst: float = -np.inf, y_worst: float = -np.inf
) -> list[int]:
    """Indices of the Pareto-optimal points, ordered from best ``x`` to worst.

    ``x_worst``/``y_worst`` say which direction is worse (``-inf``: higher is better),
    as in the metric registry. A point is kept when it beats every point with a better
    ``x`` on ``y``.
    """
    sx = -1.0 if x_worst == -np.inf else 1.0  # sort key: best x first
    sy = 1.0 if y_worst == -np.inf else -1.0  # compare: larger is better after sign
    idx = [i for i in range(len(xs)) if xs[i] is not None and ys[i] is not None]
    order = sorted(idx, key=lambda i: (sx * xs[i], -sy * ys[i]))
    best, keep = -np.inf, []
    for i in order:
        if sy * ys[i] > best:
            best = sy * ys[i]
            keep.append(i)
    return keep


def plot_pr(
    curves: Sequence[tuple[str, Sequence[float], Sequence[float]]], path: Path, title: str = ""
) -> Path:
    """Precision–recall by Hamming radius: ``curves`` = ``[(label, precision, recall)]``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for label, prec, rec in curves:
        ax.plot(rec, prec, marker="o", markersize=3, label=label)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (nothing retrieved counts 0)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title or "precision–recall by Hamming radius")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_qps(
    rows: Sequence[dict[str, Any]],
    accuracy_key: str,
    path: Path,
    *,
    x_label: str | None = None,
    title: str = "",
) -> Path:
    """QPS (log scale) against ``row["accuracy"][accuracy_key]``, one series per index
    kind and device: every configuration as a faint marker, the series' Pareto frontier
    as a line (ann-benchmarks style)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    pts = [r for r in rows if "qps" in r and r["accuracy"].get(accuracy_key) is not None]
    series: dict[str, list[dict[str, Any]]] = {}
    for r in pts:
        name = r["kind"] + (" (gpu)" if r["device"] == "gpu" else "")
        series.setdefault(name, []).append(r)
    for name, rs in series.items():
        xs = [r["accuracy"][accuracy_key] for r in rs]
        ys = [r["qps"] for r in rs]
        front = pareto_frontier(xs, ys)
        (line,) = ax.plot([xs[i] for i in front], [ys[i] for i in front], marker="o", label=name)
        ax.scatter(xs, ys, s=14, color=line.get_color(), alpha=0.35)
    ax.set_yscale("log")
    ax.set_xlabel(x_label or accuracy_key)
    ax.set_ylabel("queries per second (batch, log)")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title or f"speed vs {accuracy_key} (lines: Pareto frontiers)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_map_vs_bits(points: Sequence[tuple[str, int, float]], path: Path, title: str = "") -> Path:
    """mAP (%) against code length: ``points`` = ``[(series label, bits, mAP)]``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    series: dict[str, list[tuple[int, float]]] = {}
    for label, bits, m in points:
        series.setdefault(label, []).append((bits, m))
    for label, ps in series.items():
        ps.sort()
        ax.plot([b for b, _ in ps], [100 * m for _, m in ps], marker="o", label=label)
    ax.set_xlabel("code length (bits)")
    ax.set_ylabel("mAP@all (%)")
    ax.grid(alpha=0.3)
    ax.set_title(title or "mAP against code length")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
