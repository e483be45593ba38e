"""Figure-3-style retrieval sheets: each query beside its top-k results.

Used by ``fghash explain`` (queries from the codes file, results framed relevant or not)
and ``fghash search --image ... --grid`` (queries are the user's images; relevance is
unknown there, so results are not framed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fghash.codes.labels import format_label
from fghash.viz.sheets import Tile, draw_sheet, load_image, placeholder

__all__ = ["draw_retrieval"]


def draw_retrieval(
    examples: Sequence[dict[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str,
    root: str | os.PathLike[str] | None,
    tile: int = 96,
    note: str | None = None,
) -> tuple[Path, int, int]:
    """One row per example: the query, a gap, then its results.

    ``examples[i]`` = ``{"query": {"image": path-or-None, "file": absolute path or None,
    "label"}, "results": [{"path", "label", "distance", "relevant": bool | None}]}``;
    result paths are relative to ``root``; a query's ``file`` (the user's own image) is
    read as given. Returns the PNG path, the tiles drawn and how many images could not
    be read (drawn as grey squares).
    """
    missing = 0

    def image(root_: Any, p: Any) -> Any:
        nonlocal missing
        img = load_image(root_, p, tile)
        if img is None:
            missing += 1
            return placeholder(tile)
        return img

    rows: list[list[Tile | None]] = []
    labels = []
    for n, ex in enumerate(examples, start=1):
        q = ex["query"]
        if q.get("file") is not None:
            qimg = image(Path(q["file"]).parent, Path(q["file"]).name)
            qcap = "query image"
        else:
            qimg = image(root, q.get("path"))
            qcap = f"label {format_label(q.get('label'))}"
        row: list[Tile | None] = [Tile(qimg, qcap, "query"), None]
        for r in ex["results"]:
            rel = r.get("relevant")
            frame = None if rel is None else ("relevant" if rel else "irrelevant")
            cap = f"d = {r['distance']}\nlabel {format_label(r.get('label'))}"
            row.append(Tile(image(root, r.get("path")), cap, frame))
        rows.append(row)
        labels.append(ex.get("row_label") or f"query {n}")
    out, tiles = draw_sheet(rows, path, title=title, row_labels=labels, tile=tile, note=note)
    return out, tiles, missing
