"""Food-101 (Bossard et al., ECCV 2014): 101,000 images of 101 dishes,
750 train / 250 test per class.

Layout (``root`` is the extracted ``food-101`` folder)::

    meta/classes.txt   one class folder name per line (label = line order)
    meta/train.txt     <class>/<image id>   (no extension)
    meta/test.txt
    images/<class>/<image id>.jpg
"""

from __future__ import annotations

from pathlib import Path

from fghash.data._files import read_rows, require_file, require_root
from fghash.data.base import ImageListDataset, Transform
from fghash.errors import FghashError

__all__ = ["load_food101"]

_NAME = "food101"


def load_food101(
    root: str | Path,
    split: str = "train",
    *,
    transform: Transform | None = None,
    skip_corrupt: bool = False,
) -> ImageListDataset:
    """Load one split of Food-101 from its ``meta/`` lists."""
    root = require_root(root, _NAME)
    classes_path = require_file(root, "meta/classes.txt", _NAME)
    list_path = require_file(root, f"meta/{split}.txt", _NAME)
    classes = [fields[0] for _, fields in read_rows(classes_path, _NAME, maxsplit=0)]
    label_of = {c: k for k, c in enumerate(classes)}
    paths, labels = [], []
    for number, (entry,) in read_rows(list_path, _NAME, maxsplit=0):
        cls = entry.split("/", 1)[0]
        if "/" not in entry or cls not in label_of:
            raise FghashError(
                f"Line {number} of {list_path} ({entry!r}) is not <class>/<image id> with a class "
                f"from {classes_path} (data set {_NAME!r})."
            )
        paths.append(f"images/{entry}.jpg")
        labels.append(label_of[cls])
    return ImageListDataset(
        root,
        paths,
        labels,
        classes,
        name=_NAME,
        split=split,
        transform=transform,
        skip_corrupt=skip_corrupt,
    )
