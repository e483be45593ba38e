"""A folder written as one unit (a bench report, an explain report): a marker says a
writer is at work in it, so the next writer can undo what a killed one left.

The writer holds the folder's writer lock (:func:`fghash.util.locks.writer_lock`), then:

1. :func:`undo_unfinished` — a marker left by an earlier writer means it died part-way
   (``kill -9``, power loss): every entry it did not find there is removed, so the folder
   is as it was before that writer (less the report it was replacing);
2. :func:`mark_unfinished` — before its first write, it records the entries that are not
   its own (the user's files, kept by ``--force``) in ``.fghash-unfinished.json``;
3. it writes its files, the one that says "complete" (``report.json``,
   ``explain.json``) last;
4. :func:`clear_unfinished` — it removes the marker.

So a folder without the marker holds either no report or a whole one, and a folder with
it is never taken for complete: the marker outlives every file of the run.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from fghash.errors import FghashError
from fghash.util.atomic import atomic_write_text

__all__ = ["MARKER", "clear_unfinished", "mark_unfinished", "undo_unfinished"]

MARKER = ".fghash-unfinished.json"


def mark_unfinished(folder: str | os.PathLike[str], *, writer: str, keep: Iterable[str]) -> None:
    """Record that ``writer`` (e.g. ``"fghash bench"``) starts writing ``folder``; the
    entries named in ``keep`` are not its own and survive an undo."""
    doc = {"writer": writer, "pid": os.getpid(), "keep": sorted(set(keep))}
    atomic_write_text(Path(folder) / MARKER, json.dumps(doc) + "\n")


def clear_unfinished(folder: str | os.PathLike[str]) -> None:
    """The writer is done: remove the marker (its last step)."""
    (Path(folder) / MARKER).unlink(missing_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def undo_unfinished(folder: str | os.PathLike[str]) -> list[str]:
    """Undo a dead writer's work in ``folder``: remove every entry its marker does not
    keep, then the marker. Call it holding the folder's writer lock (no live writer then
    has a marker there). Returns the names removed; ``[]`` when there is no marker."""
    folder = Path(folder)
    marker = folder / MARKER
    if not marker.is_file():
        return []
    try:
        doc = json.loads(marker.read_text(encoding="utf-8"))
        keep = {str(n) for n in doc["keep"]}
        writer = str(doc.get("writer", "fghash"))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise FghashError(
            f"{marker} is not a marker fghash wrote; remove it if no fghash command is "
            "writing this folder."
        ) from None
    removed = []
    try:
        for entry in sorted(folder.iterdir()):
            if entry.name not in keep and entry.name != MARKER:
                _remove(entry)
                removed.append(entry.name)
        marker.unlink()
    except OSError as e:
        raise FghashError(
            f"{folder} holds the unfinished output of an interrupted {writer}, and it "
            f"cannot be removed: {e.strerror or e}."
        ) from None
    return removed
