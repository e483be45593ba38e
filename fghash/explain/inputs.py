"""What ``fghash explain`` works from: one split of a codes file, made ready to explain.

Gathers, for one codes file: the ±1 codes, the relaxed values (the stored
``relaxed_code`` features, else encoded with ``--run``, else none), the ground-truth
attributes (from the file, or another codes file by item id), the image paths and the
data root they are relative to. Anything missing is recorded as a sentence in
``skipped`` instead of failing, so the report can say what it left out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fghash.codes import CodesFile, Split, codes_to_signs, read_codes
from fghash.codes.checks import UNKNOWN_ATTRIBUTE, check_finite
from fghash.errors import FghashError
from fghash.viz.search_grid import run_data_root

__all__ = ["ExplainInput", "load_input", "find_data_root"]


@dataclass
class ExplainInput:
    """One codes file, one split, ready for :mod:`fghash.explain.stats`."""

    path: Path
    cf: CodesFile
    split: str
    signs: np.ndarray  # float32 [N, K], ±1
    relaxed: np.ndarray | None  # float [N, K]: relaxed codes tanh(v), when known
    relaxed_source: str  # "file", "run" or "none"
    attributes: np.ndarray | None  # uint8 [N, A]
    attribute_names: list[str] | None
    root: Path | None  # data root the paths are relative to
    skipped: list[str] = field(default_factory=list)

    @property
    def data(self) -> Split:
        return self.cf[self.split]

    @property
    def name(self) -> str:
        return f"{self.path.stem} ({self.cf.method}, {self.cf.bits} bits)"


def find_data_root(
    given: str | os.PathLike[str] | None,
    config: dict[str, Any],
    codes_path: Path,
    run: str | os.PathLike[str] | None = None,
) -> tuple[Path | None, str | None]:
    """The folder the codes file's ``paths`` are relative to, and a note when none is found.

    Order: ``given`` (``--data-root``; must exist), the ``data_root`` in the codes file's
    config (as written by ``fghash encode``: relative to the working folder, or else to
    the codes file's folder), then the run's ``config.json``.
    """
    if given is not None:
        p = Path(given)
        if not p.is_dir():
            raise FghashError(f"--data-root {p} is not a folder.")
        return p, None
    recorded = [config.get("data_root")] if isinstance(config, dict) else []
    if run is not None:
        recorded.append(run_data_root(run))
    tried = []
    for r in filter(None, recorded):
        for cand in (Path(r), codes_path.parent / r):
            if cand.is_dir():
                return cand, None
        tried.append(str(r))
    if tried:
        return (
            None,
            f"the data root recorded for it ({tried[0]}) is not a folder here; pass --data-root",
        )
    return None, "no data root is recorded for it; pass --data-root"


def _unknown_attributes_note(path: Path, attrs: np.ndarray) -> list[str]:
    """The report line for items whose attributes are (partly) unknown, if any."""
    unknown = int((attrs == UNKNOWN_ATTRIBUTE).any(axis=1).sum())
    if not unknown:
        return []
    return [
        f"attributes: {unknown} of {len(attrs)} items in {path.name} have unknown attributes "
        f"({UNKNOWN_ATTRIBUTE}, e.g. added by `fghash add --images`); they are left out of the "
        "AUC and awareness of each attribute they lack"
    ]


def _attributes_from(
    other: Path, split: str, ids: np.ndarray
) -> tuple[np.ndarray, list[str] | None]:
    """Attributes of the items ``ids`` taken from ``other``'s split of the same name."""
    cf = read_codes(other, splits=[split], features=False)
    s = cf[split]
    if s.attributes is None:
        raise FghashError(f"--attributes-from {other} holds no attributes in split {split!r}.")
    where = {int(i): n for n, i in enumerate(s.ids)}
    missing = [int(i) for i in ids if int(i) not in where]
    if missing:
        raise FghashError(
            f"--attributes-from {other}: split {split!r} lacks {len(missing)} of the item ids "
            f"(e.g. {missing[0]}); it must describe the same images."
        )
    return s.attributes[[where[int(i)] for i in ids]], cf.attribute_names


def _encode_relaxed(
    run: str | os.PathLike[str], root: Path, paths: list[str], device: str
) -> np.ndarray:
    import fghash  # torch is imported here, only when a run must encode

    return fghash.load(run, device=device).encode_relaxed([str(root / p) for p in paths])


def load_input(
    path: str | os.PathLike[str],
    *,
    split: str = "database",
    run: str | os.PathLike[str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    attributes_from: str | os.PathLike[str] | None = None,
    device: str = "auto",
) -> ExplainInput:
    """Read ``path`` and gather everything :func:`fghash.explain.run.explain` needs (module docstring)."""
    path = Path(path)
    cf = read_codes(path)
    if split not in cf.splits:
        raise FghashError(f"{path} has no split {split!r}; it has {', '.join(sorted(cf.splits))}.")
    s = cf[split]
    skipped: list[str] = []
    root, why = find_data_root(data_root, cf.config, path, run)
    if s.paths is None:
        skipped.append(f"images: split {split!r} of {path.name} stores no image paths")
    elif root is None:
        skipped.append(f"images: {why}")
    relaxed, source = None, "none"
    if (
        s.features is not None
        and s.features_kind == "relaxed_code"
        and s.features.shape[1] == cf.bits
    ):
        relaxed, source = s.features.astype(np.float64), "file"
    elif run is not None and s.paths is not None and root is not None:
        relaxed, source = _encode_relaxed(run, root, s.paths, device).astype(np.float64), "run"
    else:
        kind = s.features_kind if s.features is not None else None
        have = f"its features are {kind!r}, not relaxed codes" if kind else "it stores no features"
        skipped.append(
            f"relaxed values: {path.name} split {split!r}: {have} (and no --run with images to "
            "encode them), so AUCs use the bits' signs and the per-bit grids are left out"
        )
    if relaxed is not None:
        where = str(path) if source == "file" else f"relaxed values encoded with {run}"
        check_finite(where, f"/{split}/features", relaxed)
    attrs, names = s.attributes, cf.attribute_names
    if attributes_from is not None:
        attrs, names = _attributes_from(Path(attributes_from), split, s.ids)
    if attrs is None:
        skipped.append(
            f"attributes: {path.name} holds no ground-truth attributes (CUB-200-2011 and the "
            "synthetic set have them; --attributes-from can borrow them), so no AUC or awareness"
        )
    else:
        if names is None:
            names = [f"attribute {i}" for i in range(attrs.shape[1])]
        skipped += _unknown_attributes_note(path, attrs)
    return ExplainInput(
        path=path,
        cf=cf,
        split=split,
        signs=codes_to_signs(s.codes, cf.bits),
        relaxed=relaxed,
        relaxed_source=source,
        attributes=attrs,
        attribute_names=names,
        root=root,
        skipped=skipped,
    )
