"""``fghash search --image ... --grid out.png``: each query image beside its results."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fghash.errors import FghashError
from fghash.runs.config import load_config
from fghash.runs.folder import CONFIG
from fghash.viz.retrieval_sheet import draw_retrieval

__all__ = ["run_data_root", "write_search_grid"]


def run_data_root(run: str | os.PathLike[str]) -> str | None:
    """The ``data_root`` recorded in a run folder's ``config.json`` (None when absent or
    when the run's config cannot be read: a data root is a hint, never required)."""
    try:
        cfg = load_config(Path(run) / CONFIG)
    except (FghashError, OSError, TypeError, ValueError):
        return None
    return cfg.data_root or None


def write_search_grid(
    results: Sequence[dict[str, Any]],
    path: str | os.PathLike[str],
    run: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None = None,
) -> tuple[Path, int]:
    """Draw ``fghash search`` results (queries: the user's image files) as a PNG.

    Result paths are relative to ``data_root``, else to the run's recorded data root.
    Relevance is unknown for an outside image, so results are not framed. Returns the
    PNG path and how many images could not be read.
    """
    root = data_root if data_root is not None else run_data_root(run)
    examples = [
        {
            "query": {"file": r["query"]["path"]},
            "results": [{**hit, "relevant": None} for hit in r["results"]],
            "row_label": Path(r["query"]["path"]).name,
        }
        for r in results
    ]
    k = max((len(r["results"]) for r in results), default=0)
    out, _, missing = draw_retrieval(
        examples,
        path,
        title=f"top-{k} Hamming search for {len(examples)} query image(s), encoded by the run "
        f"{run} (d = Hamming distance)",
        root=root,
    )
    return out, missing
