"""Images as new items for ``fghash add``: encoded with a trained run into a codes split.

It sits above ``index/`` and the learning side: :mod:`index.append` takes codes and
items only, and this module is where images meet the trained network. torch is
imported only when it is called.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fghash.codes import Split, signs_to_codes
from fghash.errors import FghashError

__all__ = ["IMAGE_SUFFIXES", "image_files", "encode_new_items"]

#: File suffixes taken from a folder given as images (a file given by name is taken as is).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def image_files(images: list[str | os.PathLike[str]]) -> list[str]:
    """The files given, with every folder replaced by the images under it (sorted)."""
    files: list[str] = []
    for p in map(Path, images):
        if p.is_dir():
            files += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(str(p))
    return files


def encode_new_items(
    run_dir: str | os.PathLike[str],
    images: list[str | os.PathLike[str]],
    *,
    first_id: int,
    label: int | None = None,
    features: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
) -> tuple[int, Split]:
    """Encode image files (or every image in given folders) with a trained run.

    Uses :func:`fghash.encoding.encode.load` (the run's evaluation transform and network).
    Ids are ``first_id, first_id + 1, ...``; paths are the files as given; ``label`` (one
    class for all, or None) becomes their labels; ``features`` ``"relaxed_code"`` or
    ``"backbone"`` also stores those float features (as ``fghash encode`` does). Returns
    the code length and the items, ready for :func:`index.append.add_to_bundle`.
    """
    from fghash.encoding.encode import load

    files = image_files(images)
    if not files:
        raise FghashError("no images to add: give image files or folders holding images.")
    enc = load(run_dir, device=device)
    feats = None
    if features == "relaxed_code":
        feats = enc.encode_relaxed(files, batch_size=batch_size)
        codes = signs_to_codes(feats)
    else:
        codes = enc.encode(files, batch_size=batch_size)
        if features == "backbone":
            feats = enc.features(files, batch_size=batch_size)
        elif features is not None:
            raise FghashError(f"cannot compute features of kind {features!r} for new images.")
    n = len(files)
    labels = None if label is None else np.full(n, int(label), dtype=np.int64)
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    return enc.bits, Split(
        codes=codes, ids=ids, labels=labels, paths=files, features=feats, features_kind=features
    )
