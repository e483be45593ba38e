"""Attribute awareness of several codes files side by side (``fghash explain A.h5 B.h5 …``).

Each file's score (mean over bits, and over attributes, of the best |AUC − ½|; see
:mod:`fghash.explain.stats`) is shown next to the same score of its own codes under random
orthogonal rotations. ``bench/scripts/reproduce_tables.py`` uses :func:`awareness_rows` and
:func:`awareness_markdown` for its Table-2 output; ``fghash explain`` prints
:func:`awareness_text`, the same table as aligned plain text.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fghash.explain.inputs import ExplainInput
from fghash.explain.plots import plot_compare
from fghash.explain.run import awareness_summary, jsonable, prepare_out
from fghash.util.atomic import atomic_write_text
from fghash.util.unfinished import clear_unfinished

__all__ = ["awareness_rows", "awareness_markdown", "awareness_text", "compare"]


def awareness_rows(
    inputs: Sequence[ExplainInput],
    *,
    names: Sequence[str] | None = None,
    rotations: int = 20,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per input: name, codes file, method, bits and the scores with their null
    (or ``"skipped"`` when the file has no attributes)."""
    rows = []
    for n, inp in enumerate(inputs):
        aw = awareness_summary(inp, rotations=rotations, seed=seed)
        row: dict[str, Any] = {
            "name": names[n] if names is not None else inp.name,
            "codes": str(inp.path),
            "method": inp.cf.method,
            "bits": inp.cf.bits,
        }
        if "per_bit" in aw:
            keys = ("scores_from", "per_bit", "per_attribute", "null", "binary")
            row.update({k: aw[k] for k in keys if k in aw})
        else:
            row["skipped"] = "no attributes"
        rows.append(row)
    return rows


def awareness_markdown(rows: Sequence[dict[str, Any]], rotations: int) -> list[str]:
    """The explanation and the Markdown table of the scored rows."""
    lines = [
        "Attribute awareness: mean over bits (or attributes) of the best |AUC − 0.5| of a bit's "
        "relaxed value (its sign where no relaxed values exist) for a ground-truth attribute; "
        f"max 0.5. Null: the same codes under {rotations} random orthogonal rotations (mean ± "
        "sd; p = share of rotations scoring at least as high).",
        "",
        '"signs": the same for the signs of the relaxed values (the network\'s bits), against '
        "the signs of the rotated relaxed values.",
        "",
        "| codes | scored from | per bit | null | p | per attribute | null | p "
        "| signs: per bit | null | p |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cells(a: dict[str, Any], key: str) -> str:
        n = a["null"]
        return (
            f"**{a[key]:.3f}** | {n[key + '_mean']:.3f} ± {n[key + '_std']:.3f} | "
            f"{n[key + '_p']:.3f}"
        )

    for r in rows:
        if "per_bit" not in r:
            continue
        b = cells(r["binary"], "per_bit") if "binary" in r else "– | – | –"
        lines.append(
            f"| {r['name']} | {r['scores_from']} | {cells(r, 'per_bit')} | "
            f"{cells(r, 'per_attribute')} | {b} |"
        )
    return lines


def awareness_text(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`awareness_rows` as a plain-text table under a one-line title.

    Columns: per-bit and per-attribute score, each with its rotation null (mean ± sd),
    and the per-bit score of the signs; ``-`` where a row has no such score (a file
    without attributes, or one scored from its signs only). Columns are left-aligned,
    two spaces apart, indented by two.
    """
    table = [("codes file", "per bit", "null", "per attribute", "null", "signs", "null")]
    for r in rows:
        cells: list[str] = []
        for a, key in ((r, "per_bit"), (r, "per_attribute"), (r.get("binary"), "per_bit")):
            if not a or key not in a:
                cells += ["-", "-"]
                continue
            n = a["null"]
            cells += [f"{a[key]:.3f}", f"{n[key + '_mean']:.3f}±{n[key + '_std']:.3f}"]
        table.append((r["name"], *cells))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    return "\n".join(["attribute awareness (mean best |AUC-0.5|; null: random rotations):", *lines])


def compare(
    inputs: Sequence[ExplainInput],
    out: str | os.PathLike[str],
    *,
    rotations: int = 20,
    seed: int = 0,
    force: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Write ``compare.png``, ``explain.md`` and ``explain.json`` into ``out``; returns the JSON."""
    out = Path(out)
    prepare_out(out, force)
    rows = awareness_rows(inputs, rotations=rotations, seed=seed)
    skipped = [
        f"{r['codes']}: no attributes, left out of the comparison" for r in rows if "skipped" in r
    ]
    for inp in inputs:
        skipped += [f"{inp.path.name}: {s}" for s in inp.skipped if s.startswith("attributes")]
    skipped = list(dict.fromkeys(skipped))
    scored = [r for r in rows if "per_bit" in r]
    figures = []
    if scored:
        figures.append(
            plot_compare(
                scored,
                out / "compare.png",
                title="attribute awareness of each codes file vs. random rotations of its codes",
            )
        )
    lines = ["# Attribute awareness, side by side", "", *awareness_markdown(rows, rotations)]
    lines += ["", f"Command: `{command or '(called from Python)'}`"]
    if skipped:
        lines += ["", "## Skipped", ""] + [f"- {s}" for s in skipped]
    doc = {
        "format": "fghash.explain.compare",
        "version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command or "(called from Python)",
        "rotations": rotations,
        "seed": seed,
        "rows": rows,
        "skipped": skipped,
        "figures": [p.name for p in figures],
    }
    atomic_write_text(out / "explain.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "explain.json", json.dumps(doc, indent=1, default=jsonable) + "\n")
    clear_unfinished(out)  # the marker prepare_out wrote: the report is whole
    return doc
