"""The report folder of ``fghash bench``: what may be written there, and what is refused.

A folder is fghash's when it is empty, new, or holds a ``report.json`` of fghash with the
``report.md``, plots (the PNGs the report lists) and temporaries that go with it. Then:

* a report of the *same* inputs (same codes files by SHA-256) is left alone: the run is
  skipped with a note unless ``force`` (results are expensive; reruns are explicit);
* a report of *other* inputs is refused unless ``force``: nothing would tell the two
  apart afterwards;
* a folder holding anything else (the user's own ``report.md``, notes, images) is refused
  unless ``force``, and even then only fghash's own file names are written.

Temporaries of interrupted runs (``.report.json.<pid>-….tmp``, ``.pr_curves.png.<pid>-….png``)
whose process is gone are removed first. A run writes its files between
:func:`start_report` and :func:`fghash.util.unfinished.clear_unfinished`, ``report.json``
last; a run killed in between leaves the marker of :mod:`fghash.util.unfinished`, and the
next run (holding the folder's writer lock) undoes what it wrote before looking.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from fghash.errors import FghashError
from fghash.util.atomic import remove_stale
from fghash.util.unfinished import MARKER, mark_unfinished

__all__ = ["check_out_dir", "cleanup_on_failure", "removing_on_failure", "start_report"]

T = TypeVar("T")

_REPORT = "report.json"


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return report if isinstance(report, dict) and report.get("format") == "fghash.bench" else None


def _names(items: Sequence[str], at_most: int = 3) -> str:
    shown = ", ".join(sorted(items)[:at_most])
    return shown + (f" and {len(items) - at_most} more" if len(items) > at_most else "")


def check_out_dir(out: Path, checksums: Callable[[], Sequence[str]], *, force: bool) -> bool:
    """Decide whether ``fghash bench`` may write into ``out`` for inputs whose SHA-256s
    ``checksums()`` gives (called only when a report is there to compare with).

    Returns True when ``out`` already holds the report of these same inputs and ``force``
    is False (the caller skips the run); False when the run may go ahead. Raises
    :class:`FghashError` for a folder that is not fghash's or holds a report of other
    inputs (unless ``force``).
    """
    if out.exists() and not out.is_dir():
        raise FghashError(
            f"--out {out} exists and is not a folder; choose a folder for the report."
        )
    if not out.is_dir():
        return False
    remove_stale(out)
    report, foreign = _survey(out)
    if foreign and not force:
        raise FghashError(
            f"--out {out} holds files fghash bench did not write ({_names(foreign)}); choose "
            "a new or empty folder, or pass --force to write the report beside them."
        )
    if report is None:
        return False
    theirs = sorted(str(c.get("checksum")) for c in report.get("codes", []))
    if theirs != sorted(checksums()):
        if force:
            return False
        inputs = [Path(str(c.get("path", "?"))).name for c in report.get("codes", [])]
        raise FghashError(
            f"--out {out} holds the report of other inputs ({_names(inputs)}); choose another "
            "--out, or pass --force to replace that report."
        )
    return not force


def _survey(out: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The report of fghash bench in ``out`` (None if none) and the entries that are
    not part of it."""
    entries = sorted(p.name for p in out.iterdir())
    report_path = out / _REPORT
    report = _read_report(report_path) if report_path.is_file() else None
    if report is None:
        return None, entries
    ours = {_REPORT, "report.md", *(str(n) for n in report.get("plots", []))}
    return report, [n for n in entries if n not in ours]


def start_report(out: Path) -> None:
    """Before the first file of a run (folder checked, writer lock held): mark ``out``
    unfinished, keeping the entries that are not a bench report's, then remove the report
    being replaced, ``report.json`` first, so no file of it is ever read with the new one."""
    remove_stale(out)
    _, foreign = _survey(out)
    mark_unfinished(out, writer="fghash bench", keep=foreign)
    old = {p.name for p in out.iterdir()} - set(foreign) - {MARKER}
    for name in sorted(old, key=lambda n: n != _REPORT):
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


@contextmanager
def cleanup_on_failure(out: Path) -> Iterator[None]:
    """Remove what a failed run wrote: the whole folder if the run made it, else the files
    and folders that were not there before. Files that were replaced cannot be brought
    back."""
    existed = out.is_dir()
    before = {p.name for p in out.iterdir()} if existed else set()
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(out, ignore_errors=True)
        elif out.is_dir():
            for p in out.iterdir():
                if p.name in before:
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    try:
                        os.unlink(p)
                    except OSError:
                        pass
        raise


def removing_on_failure(fn: Callable[..., T], out: Path) -> Callable[..., T]:
    """``fn`` that, when it fails, removes what it wrote in ``out`` (:func:`cleanup_on_failure`)."""

    def run(*args: Any, **kwargs: Any) -> T:
        with cleanup_on_failure(out):
            return fn(*args, **kwargs)

    return run
