"""The charts of ``fghash explain``: AUC heatmap, bit statistics, awareness against its null.

Each function takes numbers already computed by :mod:`fghash.explain.stats` and writes one
PNG (atomically, via :func:`fghash.viz.plots.save_figure`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fghash.viz.plots import pyplot, save_figure

__all__ = ["plot_auc_heatmap", "plot_bit_stats", "plot_null", "plot_compare"]


def plot_auc_heatmap(
    auc: np.ndarray,
    names: Sequence[str],
    path: Path,
    *,
    title: str,
    max_attributes: int = 40,
) -> Path:
    """Attributes (rows) × bits (columns), AUC coloured around ½; each bit's best attribute ringed.

    With more than ``max_attributes`` attributes, only those whose best |AUC − ½| is largest
    are shown (the title says so).
    """
    plt = pyplot()
    a, k = auc.shape
    dev = np.nan_to_num(np.abs(auc - 0.5), nan=-1.0)
    best_attr = dev.argmax(axis=0)
    rows = np.arange(a)
    if a > max_attributes:
        rows = np.sort(np.argsort(-dev.max(axis=1))[:max_attributes])
        title += f"\n(the {max_attributes} of {a} attributes best matched by some bit)"
    sub = auc[rows]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.38 * k + 3.2), max(3.0, 0.3 * len(rows) + 1.6)))
    im = ax.imshow(sub, cmap="RdBu_r", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    pos = {r: i for i, r in enumerate(rows)}
    for b in range(k):
        if best_attr[b] in pos:
            ax.scatter(b, pos[best_attr[b]], s=70, facecolors="none", edgecolors="black", lw=1.4)
    ax.set_xticks(range(k))
    ax.set_xticklabels([str(b) for b in range(k)], fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([names[r] for r in rows], fontsize=8)
    ax.set_xlabel("bit")
    ax.set_ylabel("attribute")
    ax.set_title(title, fontsize=10)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label("AUC (0.5 = unrelated; 1 or 0 = bit sign separates)")
    ax.scatter(
        [], [], s=70, facecolors="none", edgecolors="black", label="best attribute of the bit"
    )
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.08), fontsize=8, frameon=False)
    return save_figure(fig, path)


def plot_bit_stats(balance: np.ndarray, corr: np.ndarray, path: Path, *, title: str) -> Path:
    """Left: share of +1 per bit (ideal ½). Right: the bit correlation matrix."""
    plt = pyplot()
    k = len(balance)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(9.0, 0.5 * k + 4), 4.2))
    a1.bar(range(k), balance, color="#4c72b0")
    a1.axhline(0.5, color="black", ls="--", lw=1, label="balanced (0.5)")
    a1.set_ylim(0, 1)
    a1.set_xticks(range(k))
    a1.set_xlabel("bit")
    a1.set_ylabel("share of items with bit = +1")
    a1.set_title("bit balance")
    a1.legend(fontsize=8, loc="upper right")
    im = a2.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    a2.set_xticks(range(k))
    a2.set_yticks(range(k))
    a2.tick_params(labelsize=7)
    a2.set_xlabel("bit")
    a2.set_ylabel("bit")
    off = corr[~np.eye(k, dtype=bool)]
    mean_abs = float(np.abs(off).mean()) if off.size else 0.0
    a2.set_title(f"bit correlation (mean |off-diagonal| = {mean_abs:.2f})")
    fig.colorbar(im, ax=a2, fraction=0.046, pad=0.04).set_label("Pearson correlation")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_null(
    observed: dict[str, float], null: dict[str, np.ndarray], path: Path, *, title: str
) -> Path:
    """Histogram of each null score over rotations, with the observed score as a red line."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
    labels = {
        "per_bit": "per bit: mean over bits of best |AUC − 0.5|",
        "per_attribute": "per attribute: mean over attributes of best |AUC − 0.5|",
    }
    for ax, key in zip(axes, ("per_bit", "per_attribute"), strict=True):
        v = np.asarray(null[key], dtype=float)
        lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 0.5)
        spread = (
            (lo - 0.01, hi + 0.01) if hi - lo < 1e-6 else None
        )  # all equal: numpy needs a range
        ax.hist(
            v,
            bins=min(15, max(5, len(v) // 2)),
            range=spread,
            color="#999999",
            label=f"{len(v)} random rotations",
        )
        ax.axvline(
            observed[key], color="#d62728", lw=2.5, label=f"learned bits: {observed[key]:.3f}"
        )
        ax.set_xlim(0, 0.5)
        ax.set_xlabel(labels[key], fontsize=9)
        ax.set_ylabel("rotations")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_compare(rows: Sequence[dict[str, Any]], path: Path, *, title: str) -> Path:
    """Per codes file, observed awareness (per bit) beside its rotation null (mean ± sd):
    left from the relaxed values, right from their signs (where the rows have them)."""
    plt = pyplot()
    n = len(rows)
    panels = [("relaxed values (or stored signs)", rows)]
    if any("binary" in r for r in rows):
        panels.append(("signs of the relaxed values", [r.get("binary", {}) for r in rows]))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(len(panels) * max(4.5, 1.2 * n + 2.0), 4.4), squeeze=False
    )
    x = np.arange(n)
    names = [r["name"] for r in rows]
    for ax, (what, data) in zip(axes[0], panels, strict=True):
        obs = [d.get("per_bit", np.nan) for d in data]
        nm = [d.get("null", {}).get("per_bit_mean", np.nan) for d in data]
        ns = [d.get("null", {}).get("per_bit_std", 0.0) for d in data]
        ax.bar(x - 0.2, obs, 0.4, color="#d62728", label="learned bits")
        ax.bar(
            x + 0.2,
            nm,
            0.4,
            yerr=ns,
            color="#999999",
            capsize=3,
            label="random rotations (mean ± sd)",
        )
        for xi, v in zip(x, obs, strict=True):
            if not np.isnan(v):
                ax.text(xi - 0.2, v + 0.005, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x)
        ax.set_xticklabels(names, fontsize=8, rotation=20, ha="right")
        ax.set_ylabel("attribute awareness\n(mean over bits of best |AUC − 0.5|)")
        ax.set_ylim(0, 0.5)
        ax.set_title(f"from the {what}", fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=9)
    return save_figure(fig, path)
