"""VegFru (Hou et al., ICCV 2017): 160,731 images of 292 vegetable and fruit classes
(200 vegetables, 92 fruits); 29,200 train, 14,600 val, 116,931 test.

Layout (``root`` is the extracted VegFru folder, from github.com/ustc-vim/vegfru)::

    vegfru_list/vegfru_train.txt  <relative image path> <label 0..291>
    vegfru_list/vegfru_val.txt
    vegfru_list/vegfru_test.txt
    veg200_images/<vegetable class>/v_XX_XX_XXXX.jpg
    fru92_images/<fruit class>/f_XX_XX_XXXX.jpg

Paths in the lists are relative to ``root`` (``veg200_images/...``). Labels
0..199 are vegetables, 200..291 fruits. Following the A2-Net/SEMICON hashing
protocol, ``split="train"`` is ``vegfru_train.txt`` only (the val list is not
used) and ``split="test"`` is ``vegfru_test.txt``. Class names are the image
folder names. (The ``veg200_lists/`` and ``fru92_lists/`` of the release are the
two halves on their own, with paths relative to the image folders; they are
not read.)
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from fghash.data._files import read_labelled_list, require_file, require_root
from fghash.data.base import ImageListDataset, Transform

__all__ = ["load_vegfru"]

_NAME = "vegfru"


def load_vegfru(
    root: str | Path,
    split: str = "train",
    *,
    transform: Transform | None = None,
    skip_corrupt: bool = False,
) -> ImageListDataset:
    """Load the train or test list of VegFru-292."""
    root = require_root(root, _NAME)
    lists = {s: require_file(root, f"vegfru_list/vegfru_{s}.txt", _NAME) for s in ("train", "test")}
    # Class names from the folders of both lists, so train and test agree on all 292.
    names: dict[int, str] = {}
    for s, path in lists.items():
        s_paths, s_labels = read_labelled_list(path, _NAME)
        for p, y in zip(s_paths, s_labels, strict=True):
            parts = PurePosixPath(p.replace("\\", "/")).parts
            names.setdefault(y, parts[-2] if len(parts) > 1 else f"class_{y:03d}")
        if s == split:
            paths, labels = s_paths, s_labels
    num_classes = max(names) + 1 if names else 0
    class_names = [names.get(k, f"class_{k:03d}") for k in range(num_classes)]
    return ImageListDataset(
        root,
        paths,
        labels,
        class_names,
        name=_NAME,
        split=split,
        transform=transform,
        skip_corrupt=skip_corrupt,
    )
