"""The HDF5 features file: read the ``features`` of any split-group HDF5 file, write new ones.

The layout is the one of the codes file (``shared/DESIGN.md``): one group per split
(``/database``, usually ``/query``), each with ``features`` float32 ``[N, D]`` (attribute
``kind``) and optionally ``labels`` (int64 ``[N]`` or uint8 multi-hot ``[N, C]``),
``ids`` (int64 ``[N]``) and ``paths`` (UTF-8 ``[N]``). :func:`read_features` therefore
reads both a full fghash codes file (which also holds ``codes``) and a *features-only*
file without ``codes``, such as :func:`write_features` writes (file attributes
``format = "fghash.features"``, ``version = 1``, ``kind``, ``created``, plus any
caller attributes). The shallow baselines (:mod:`fghash.baselines`) train on these.

This module imports numpy and h5py only.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fghash.codes.checks import check_finite, check_loadable, check_split, fail
from fghash.codes.file import decode_text, encode_texts
from fghash.errors import FghashError
from fghash.util.atomic import atomic_path

__all__ = [
    "FEATURES_FORMAT",
    "FEATURES_VERSION",
    "FeatureSplit",
    "read_features",
    "read_features_config",
    "write_features",
]

logger = logging.getLogger(__name__)

FEATURES_FORMAT = "fghash.features"
FEATURES_VERSION = 1
_LOADED = ("features", "labels", "ids", "paths")  # what read_features loads of a split
_HOW_TO_MAKE = "make one with `fghash encode RUN --features backbone`"
_RESERVED_ATTRS = {"format", "version", "kind", "created"}


@dataclass
class FeatureSplit:
    """The float features of one split, with what identifies and labels each row."""

    features: np.ndarray  # float32 [N, D], continuous embedding
    labels: np.ndarray | None = None  # int64 [N] single-label, or uint8 [N, C] multi-hot
    ids: np.ndarray | None = None  # int64 [N], unique; None means 0..N-1
    paths: list[str] | None = None  # image paths relative to the data set root
    kind: str = "unknown"  # what the features are: "backbone", "relaxed_code", ...

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features)
        if self.ids is None:
            self.ids = np.arange(self.features.shape[0], dtype=np.int64)
        self.ids = np.asarray(self.ids)
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
        if self.paths is not None:
            self.paths = [str(p) for p in self.paths]

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return int(self.features.shape[1])


def _check_split(s: FeatureSplit, path: Path, name: str) -> None:
    """The features-file rules (float, non-empty, finite features) and then the per-split
    checks every codes file passes (:func:`fghash.codes.checks.check_split`)."""
    where, group = str(path), f"/{name}"
    f = s.features
    if f.ndim != 2 or not np.issubdtype(f.dtype, np.floating):
        raise fail(
            where, f"{group}/features", f"expected float [N, D], got {f.dtype} {list(f.shape)}"
        )
    if f.shape[0] == 0 or f.shape[1] == 0:
        raise fail(where, f"{group}/features", f"is empty (shape {list(f.shape)})")
    check_finite(where, f"{group}/features", f)
    check_split(where, group, f.shape[0], ids=s.ids, labels=s.labels, paths=s.paths, features=f)


def read_features(
    path: str | os.PathLike[str],
    splits: Iterable[str] | None = ("database", "query"),
) -> dict[str, FeatureSplit]:
    """Read the float features (with labels, ids and paths) of the given splits.

    Works on any HDF5 file with the split-group layout: a full fghash codes file or a
    features-only file. ``splits=None`` reads every split group that holds ``features``
    (groups without features are skipped). A named split that is missing, or that has no
    ``features`` dataset, raises :class:`FghashError` naming the file and the split.
    Features are returned as float32; all splits must share the feature dimension.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise FghashError(f"{path}: no such file; {_HOW_TO_MAKE}.")
    if path.is_dir():
        raise FghashError(f"{path} is a folder, not an HDF5 features file.")
    try:
        fh = h5py.File(path, "r")
    except OSError:
        raise FghashError(f"{path} is not an HDF5 file (or it is damaged).") from None
    out: dict[str, FeatureSplit] = {}
    with fh as f:
        groups = [k for k, v in f.items() if isinstance(v, h5py.Group)]
        if splits is None:
            wanted = [g for g in groups if "features" in f[g]]
            skipped = sorted(set(groups) - set(wanted))
            if skipped:
                logger.info("%s: splits without features skipped: %s", path, ", ".join(skipped))
            if not wanted:
                raise FghashError(f"{path} holds no split with a features dataset; {_HOW_TO_MAKE}.")
        else:
            wanted = list(splits)
        for name in wanted:
            where = f"{path}: /{name}"
            if name not in groups:
                raise FghashError(
                    f"{path} has no split {name!r} (it has {', '.join(sorted(groups)) or 'none'})."
                )
            g = f[name]
            if "features" not in g:
                raise FghashError(
                    f"{where}/features is missing, so there are no float features to hash; {_HOW_TO_MAKE}."
                )
            check_loadable(str(path), f"/{name}", g, [k for k in g if k not in _LOADED])
            d = g["features"]
            paths = [decode_text(p) for p in g["paths"][()]] if "paths" in g else None
            s = FeatureSplit(
                features=d[()],
                labels=g["labels"][()] if "labels" in g else None,
                ids=g["ids"][()] if "ids" in g else None,
                paths=paths,
                kind=decode_text(d.attrs.get("kind", "unknown")),
            )
            _check_split(s, path, name)
            s.features = s.features.astype(np.float32, copy=False)
            if s.labels is not None:
                s.labels = s.labels.astype(np.int64 if s.labels.ndim == 1 else np.uint8, copy=False)
            s.ids = s.ids.astype(np.int64, copy=False)
            out[name] = s
    dims = {n: s.dim for n, s in out.items()}
    if len(set(dims.values())) > 1:
        raise FghashError(
            f"{path}: splits have different feature dimensions ({', '.join(f'{k}={v}' for k, v in dims.items())})."
        )
    return out


def read_features_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config`` file attribute (JSON) of a features or codes file, ``{}`` if absent."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("config")
    except OSError:
        raise FghashError(f"{path} is not an HDF5 file (or it is damaged).") from None
    if raw is None:
        return {}
    try:
        value = json.loads(decode_text(raw))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def write_features(
    path: str | os.PathLike[str],
    splits: Mapping[str, FeatureSplit],
    kind: str,
    attrs: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = True,
) -> Path:
    """Write a features-only file atomically (temporary file in the same folder, then rename).

    ``kind`` says what the features are (e.g. ``"backbone"``) and is written both as a
    file attribute and on every ``features`` dataset. ``attrs`` are extra file
    attributes: strings and numbers as they are, anything else as JSON. Validates first;
    on any error the file at ``path`` (if any) is left untouched. Returns the path.
    """
    import h5py

    path = Path(path)
    if "database" not in splits:
        raise FghashError(f"{path}: a features file needs a 'database' split.")
    for name, s in splits.items():
        if not name or "/" in name:
            raise FghashError(f"{path}: split name {name!r} must be non-empty and contain no '/'.")
        _check_split(s, path, name)
    dims = {s.dim for s in splits.values()}
    if len(dims) > 1:
        raise FghashError(
            f"{path}: all splits must have the same feature dimension, got {sorted(dims)}."
        )
    extra = dict(attrs or {})
    clash = _RESERVED_ATTRS & set(extra)
    if clash:
        raise FghashError(f"{path}: attribute(s) {', '.join(sorted(clash))} are reserved.")
    if path.exists() and not overwrite:
        raise FghashError(f"{path} already exists; pass --force to replace it.")
    if not path.parent.exists():
        raise FghashError(f"{path}: the folder {path.parent} does not exist.")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FEATURES_FORMAT
        f.attrs["version"] = FEATURES_VERSION
        f.attrs["kind"] = str(kind)
        f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        for k, v in extra.items():
            plain = isinstance(v, (str, int, float, np.integer, np.floating)) and not isinstance(
                v, bool
            )
            f.attrs[k] = v if plain else json.dumps(v, sort_keys=True, default=str)
        for name, s in splits.items():
            g = f.create_group(name)
            d = g.create_dataset("features", data=np.ascontiguousarray(s.features, np.float32))
            d.attrs["kind"] = str(kind)
            g.create_dataset("ids", data=np.asarray(s.ids, np.int64))
            if s.labels is not None:
                ldt = np.int64 if s.labels.ndim == 1 else np.uint8
                g.create_dataset("labels", data=np.asarray(s.labels, ldt))
            if s.paths is not None:
                paths = encode_texts(s.paths)
                g.create_dataset("paths", data=paths, dtype=h5py.string_dtype("utf-8"))
    return path
