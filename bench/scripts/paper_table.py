"""One combined mAP table in the layout of the A²-Net paper's Table 1.

Give codes files (or run directories that contain ``codes.h5``) for one or more data
sets, code lengths and methods. Each is scored by mAP@all (ADSH/A²-Net protocol, query
split against database split, tie handling named) and the results are laid out as

* ``--layout dataset`` (the paper's): rows data set × bits, one column per method;
* ``--layout method``: rows method × bits, one column per data set;
* ``--layout ablation`` (the paper's Table 2): rows data set × method (ablation step), one
  column per code length;

in % mAP with two decimals, the best entry of each row (of each column for ``ablation``)
in bold. Reference columns (e.g. exact float search, not a hashing method) are never bold.
:func:`score_float` scores the exact float search over a file's ``features`` the same way,
for such a reference column (used by :mod:`bench.scripts.reproduce_tables`). Writes
``paper_table.md`` and ``paper_table.json`` (every entry, its file and checksum, and the
command line that made the table) to ``--out``::

    python -m bench.scripts.paper_table runs/cub-12 runs/cub-24 itq-cub-12.h5 --out tables/
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.evaluate import dataset_name, load_for_bench
from bench.machine import software_info
from fghash.codes import file_checksum
from fghash.errors import FghashError
from fghash.eval.metrics import TIES, average_precision
from fghash.eval.ranking import rank_float, rank_hamming
from fghash.util.atomic import atomic_write_text

__all__ = [
    "LAYOUTS",
    "resolve_input",
    "score_codes",
    "score_float",
    "build_table",
    "render_table",
    "paper_table",
    "main",
]

LAYOUTS = ("dataset", "method", "ablation")


def resolve_input(path: str | os.PathLike[str]) -> Path:
    """A codes file, or a run directory holding ``codes.h5``."""
    p = Path(path)
    if p.is_dir():
        c = p / "codes.h5"
        if not c.is_file():
            raise FghashError(
                f"{p} is a folder without codes.h5; run `fghash encode` into it or pass the codes file."
            )
        return c
    if not p.exists():
        raise FghashError(f"{p}: no such codes file or run directory.")
    return p


def score_codes(
    path: Path, ties: str = "tie-aware", dataset: str | None = None, progress: bool | None = None
) -> dict[str, Any]:
    """mAP@all of one codes file: ``{"path", "checksum", "dataset", "method", "bits", "map", ...}``."""
    if ties not in TIES:
        raise FghashError(f"--ties must be one of {', '.join(TIES)}, got {ties!r}.")
    cf = load_for_bench(path)
    q, db = cf["query"], cf["database"]
    if q.labels is None or db.labels is None:
        raise FghashError(
            f"{path} has no labels in its query and database splits; mAP needs labels."
        )
    st = rank_hamming(
        q.codes, db.codes, cf.bits, q.labels, db.labels, stable=ties == "stable", progress=progress
    )
    return {
        "path": str(path),
        "checksum": file_checksum(path),
        "dataset": dataset or dataset_name(cf),
        "method": cf.method,
        "bits": cf.bits,
        "n_query": len(q),
        "n_database": len(db),
        "ties": ties,
        "map": float(np.mean(average_precision(st, None, ties))),
        "queries_without_relevant": int(np.sum(st.n_relevant == 0)),
    }


def score_float(
    path: Path, metric: str = "ip", dataset: str | None = None, progress: bool | None = None
) -> dict[str, Any]:
    """mAP@all of exact float search (FAISS ``IndexFlatIP``/``IndexFlatL2`` order) over the
    ``features`` of a codes file's query and database splits; same keys as
    :func:`score_codes`, plus ``features`` (their kind) and ``metric``. Float scores do not
    tie in practice, so the ranking is the stable one."""
    if metric not in ("ip", "l2"):
        raise FghashError(f"the float metric must be ip or l2, got {metric!r}.")
    cf = load_for_bench(path)
    q, db = cf["query"], cf["database"]
    if q.labels is None or db.labels is None:
        raise FghashError(
            f"{path} has no labels in its query and database splits; mAP needs labels."
        )
    if q.features is None or db.features is None:
        raise FghashError(
            f"{path} has no features in its query and database splits; encode it with "
            "`fghash encode RUN --features relaxed` for the exact float baseline."
        )
    st = rank_float(q.features, db.features, q.labels, db.labels, metric=metric, progress=progress)
    return {
        "path": str(path),
        "checksum": file_checksum(path),
        "dataset": dataset or dataset_name(cf),
        "method": f"float-{metric}",
        "bits": cf.bits,
        "n_query": len(q),
        "n_database": len(db),
        "ties": "stable",
        "features": db.features_kind,
        "metric": metric,
        "map": float(np.mean(average_precision(st, None, "stable"))),
        "queries_without_relevant": int(np.sum(st.n_relevant == 0)),
    }


def build_table(
    entries: Sequence[dict[str, Any]],
    layout: str = "dataset",
    reference: Sequence[str] = (),
) -> dict[str, Any]:
    """Arrange entries: ``{"layout", "group", "columns", "reference", "rows"}``.

    ``dataset``/``method`` layouts: each row is ``{group, "bits", "values": {column: % mAP}}``;
    ``ablation``: each row is ``{"dataset", "method", "values": {bits: % mAP}}`` and the
    columns are the code lengths. ``reference`` names columns (methods) that are shown but
    never marked best.
    """
    if layout not in LAYOUTS:
        raise FghashError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}.")
    group_key, col_key = {
        "dataset": ("dataset", "method"),
        "method": ("method", "dataset"),
        "ablation": ("dataset", "bits"),
    }[layout]
    seen: dict[tuple[str, int, str], str] = {}
    for e in entries:
        key = (e["dataset"], e["bits"], e["method"])
        if key in seen:
            raise FghashError(
                f"{e['path']} and {seen[key]} both give {e['dataset']}, {e['method']}, {e['bits']} bits; "
                "pass one file per data set, method and code length."
            )
        seen[key] = e["path"]
    groups = list(dict.fromkeys(e[group_key] for e in entries))
    rows: list[dict[str, Any]] = []
    if layout == "ablation":
        columns: list[Any] = sorted({e["bits"] for e in entries})
        for g in groups:
            for m in dict.fromkeys(e["method"] for e in entries if e["dataset"] == g):
                vals = {
                    e["bits"]: 100 * e["map"]
                    for e in entries
                    if e["dataset"] == g and e["method"] == m
                }
                rows.append({"dataset": g, "method": m, "values": vals})
    else:
        columns = list(dict.fromkeys(e[col_key] for e in entries))
        for g in groups:
            for bits in sorted({e["bits"] for e in entries if e[group_key] == g}):
                vals = {
                    e[col_key]: 100 * e["map"]
                    for e in entries
                    if e[group_key] == g and e["bits"] == bits
                }
                rows.append({group_key: g, "bits": bits, "values": vals})
    return {
        "layout": layout,
        "group": group_key,
        "columns": columns,
        "reference": [c for c in reference if c in columns],
        "rows": rows,
    }


def _cell(v: float | None, best: bool) -> str:
    if v is None:
        return "–"
    return f"**{v:.2f}**" if best else f"{v:.2f}"


def render_table(table: dict[str, Any], ties: str, command: str | None = None) -> str:
    """Markdown: group name on its first row only, then % mAP per column. The best entry
    of each row (``ablation``: of each column) is bold, reference columns excepted."""
    g, cols = table["group"], table["columns"]
    ref = set(table.get("reference", ()))
    ablation = table["layout"] == "ablation"
    if ablation:
        head = ["Data set", "Method", *(f"{b} bits" for b in cols)]
        align = ["---", "---"] + ["---:"] * len(cols)
        best_of_col = {}
        for c in cols:
            vs = [r["values"][c] for r in table["rows"] if c in r["values"]]
            best_of_col[c] = max(vs) if len(vs) > 1 else None
    else:
        head = ["Data sets" if g == "dataset" else "Methods", "# bits", *cols]
        align = ["---", "---:"] + ["---:"] * len(cols)
    lines = [
        f"Retrieval accuracy (% mAP@all, ties: {ties}), query split against database split.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(align) + "|",
    ]
    last = None
    for r in table["rows"]:
        vals = r["values"]
        name = r[g] if r[g] != last else ""
        last = r[g]
        if ablation:
            cells = [_cell(vals.get(c), vals.get(c) == best_of_col[c]) for c in cols]
            lines.append("| " + " | ".join([name, str(r["method"]), *cells]) + " |")
            continue
        ranked = [v for c, v in vals.items() if c not in ref]
        best = max(ranked) if len(ranked) > 1 else None
        cells = [_cell(vals.get(c), c not in ref and vals.get(c) == best) for c in cols]
        lines.append("| " + " | ".join([name, str(r["bits"]), *cells]) + " |")
    if command:
        lines += ["", f"Made by `{command}`."]
    return "\n".join(lines) + "\n"


def paper_table(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    ties: str = "tie-aware",
    layout: str = "dataset",
    dataset: str | None = None,
    command: str | None = None,
    progress: bool | None = None,
) -> tuple[Path, Path]:
    """Score every input and write ``paper_table.md`` and ``paper_table.json`` to ``out_dir``."""
    if not inputs:
        raise FghashError("give at least one codes file or run directory.")
    if layout not in LAYOUTS:
        raise FghashError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}.")
    paths = [resolve_input(p) for p in inputs]
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FghashError(f"--out {out} exists and is not a folder.")
    entries = [score_codes(p, ties, dataset, progress) for p in paths]
    table = build_table(entries, layout)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": "fghash.paper_table",
        "version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "ties": ties,
        "metric": "map@all (percent in table, fraction in entries)",
        "software": software_info(),
        "table": table,
        "entries": entries,
    }
    md = atomic_write_text(out / "paper_table.md", render_table(table, ties, command))
    js = atomic_write_text(out / "paper_table.json", json.dumps(doc, indent=1) + "\n")
    return md, js


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(
        prog="python -m bench.scripts.paper_table", description=__doc__.splitlines()[0]
    )
    p.add_argument("inputs", nargs="+", metavar="CODES_OR_RUN_DIR")
    p.add_argument("--out", required=True, help="folder for paper_table.md and paper_table.json")
    p.add_argument("--ties", choices=TIES, default="tie-aware")
    p.add_argument("--layout", choices=LAYOUTS, default="dataset")
    p.add_argument(
        "--dataset", help="data set name for every input (default: from each file's config)"
    )
    a = p.parse_args(argv)
    command = shlex.join(["python", "-m", "bench.scripts.paper_table", *argv])
    try:
        md, js = paper_table(
            a.inputs, a.out, ties=a.ties, layout=a.layout, dataset=a.dataset, command=command
        )
    except FghashError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    print(md)
    print(js)
    return 0


if __name__ == "__main__":
    sys.exit(main())
