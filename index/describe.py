"""``fghash info``: what a codes file or an index bundle holds, and what makes it unusable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fghash.codes import open_split, read_attrs
from fghash.errors import FghashError
from index.bundle import check_bundle
from index.folder import is_bundle

__all__ = ["describe"]


def describe(path: str | os.PathLike[str], *, verify: bool = False) -> dict[str, Any]:
    """What a codes file or an index bundle holds, as a JSON-ready dict.

    ``{"type": "codes", ...}`` carries :func:`fghash.codes.file.read_attrs` (bits, method,
    config, created, splits with sizes, labels and features); ``{"type": "index", ...}``
    carries the bundle's ``index.json`` (kind, bits, dim, ntotal, params, source codes
    file and its checksum) and ``checked``: what of ``index.faiss`` was compared with
    its record (see :func:`index.bundle.check_bundle`). ``problems`` lists, one sentence
    each, what makes the file or bundle unusable (a damaged ``index.faiss``, duplicate
    ids, anything the full validation of a codes file finds).
    """
    p = Path(path)
    if not p.exists() and not is_bundle(p):  # is_bundle puts back a bundle moved aside
        raise FghashError(f"{p}: no such codes file or index bundle.")
    if is_bundle(p):
        meta, checked, problems = check_bundle(p, verify=verify)
        return {"type": "index", "path": str(p), **meta, "checked": checked, "problems": problems}
    if p.is_dir():
        raise FghashError(f"{p} is a folder but not an fghash index bundle (no index.json).")
    head = read_attrs(p)
    problems = []
    for name in sorted(head["splits"]):  # what build-index checks: unique ids, unused bits 0
        try:
            with open_split(p, name) as r:
                r.validate()
        except FghashError as e:
            problems.append(str(e))
    return {"type": "codes", "path": str(p), **head, "problems": problems}
