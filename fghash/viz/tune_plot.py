"""The PNG of ``fghash tune``: QPS against tie-aware recall, one curve per index kind.

Takes the plain point dicts of ``TuneResult.as_dict()["points"]`` (this room does not
import :mod:`index`): each kind's points as markers, its recall/QPS frontier as a line,
the Pareto front of all points ringed, the pick as a star and the recall floor dashed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fghash.viz.plots import pareto_frontier, pyplot, save_figure

__all__ = ["plot_tune"]

_MARKERS = {"flat": "s", "ivf": "o", "hnsw": "^", "hash": "v", "multihash": "D"}


def _series(p: dict[str, Any]) -> str:
    """Legend name: the kind, with its device and engine when not the CPU's FAISS."""
    name = p["kind"]
    if p.get("engine", "faiss") != "faiss":
        name += f" [{p['engine']}]"
    if p.get("device", "cpu") != "cpu":
        name += f" @{p['device']}"
    return name


def plot_tune(
    points: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    pick: dict[str, Any] | None = None,
    min_recall: float | None = None,
    k: int = 10,
    title: str = "",
) -> Path:
    """Write the plot described in the module docstring to ``path`` (a PNG)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    kinds: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        kinds.setdefault(_series(p), []).append(p)
    for name, pts in kinds.items():
        xs, ys = [p["recall"] for p in pts], [p["qps"] for p in pts]
        marker = _MARKERS.get(pts[0]["kind"], "o")
        line = ax.plot(xs, ys, marker, alpha=0.45, markersize=5)[0]
        front = pareto_frontier(xs, ys)
        front.sort(key=lambda i: xs[i])
        ax.plot(
            [xs[i] for i in front],
            [ys[i] for i in front],
            "-" + marker,
            color=line.get_color(),
            label=name,
            markersize=5,
        )
    best = [p for p in points if p.get("pareto")]
    if best:
        ax.scatter(
            [p["recall"] for p in best],
            [p["qps"] for p in best],
            s=90,
            facecolors="none",
            edgecolors="black",
            linewidths=0.8,
            label="Pareto front (recall, QPS, memory, build)",
        )
    if min_recall is not None:
        ax.axvline(min_recall, color="grey", linestyle="--", linewidth=1, label="min recall")
    if pick is not None:
        ax.scatter(
            [pick["recall"]],
            [pick["qps"]],
            marker="*",
            s=320,
            color="crimson",
            zorder=5,
            label=f"pick: {pick['label']}",
        )
    ax.set_yscale("log")
    ax.set_xlabel(f"recall@{k} (tie-aware)")
    ax.set_ylabel("queries per second (one thread)")
    ax.set_title(title or "fghash tune")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return save_figure(fig, Path(path))
