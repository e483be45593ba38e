"""Stanford Dogs (Khosla et al., 2011) and Stanford Cars (Krause et al., 2013):
both ship their splits as MATLAB ``.mat`` files, read with ``scipy.io.loadmat``.

Stanford Dogs, 120 breeds, 12,000 train / 8,580 test (``root`` holds the
extracted ``images.tar`` and ``lists.tar``)::

    train_list.mat   file_list (cell of '<wnid>-<breed>/<file>.jpg'), labels (1..120)
    test_list.mat
    Images/<wnid>-<breed>/<file>.jpg

(``lists/train_list.mat`` and a lower-case ``images/`` are accepted too.)

Stanford Cars, 196 models, 8,144 train / 8,041 test (``root`` is the
``stanford_cars`` folder that torchvision also expects)::

    devkit/cars_meta.mat         class_names (cell of 196 names)
    devkit/cars_train_annos.mat  annotations: struct bbox_x1, bbox_y1, bbox_x2, bbox_y2, class (1..196), fname
    cars_test_annos_withlabels.mat   the same for the test images (also accepted under devkit/)
    cars_train/<fname>.jpg
    cars_test/<fname>.jpg
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from fghash.data._files import first_existing, load_mat, require_file, require_root
from fghash.data.base import ImageListDataset, Transform
from fghash.errors import FghashError

__all__ = ["load_stanford_dogs", "load_stanford_cars"]


def _field(mat: dict, key: str, path: Path, dataset: str) -> np.ndarray:
    if key not in mat:
        raise FghashError(f"File {path} of data set {dataset!r} has no variable {key!r}.")
    return np.atleast_1d(mat[key])


def _as_str(value) -> str:
    return str(np.asarray(value).reshape(-1)[0]) if np.ndim(value) else str(value)


def _as_int(value) -> int:
    return int(np.asarray(value).reshape(-1)[0])


def _read_dogs_list(root: Path, split: str) -> tuple[list[str], list[int], Path]:
    path = first_existing(
        root, [f"{split}_list.mat", f"lists/{split}_list.mat"], "dogs", f"{split} list"
    )
    mat = load_mat(path, "dogs")
    files = [_as_str(f) for f in _field(mat, "file_list", path, "dogs")]
    labels = [_as_int(y) for y in _field(mat, "labels", path, "dogs")]
    if len(files) != len(labels):
        raise FghashError(
            f"File {path} of data set 'dogs' has {len(files)} files but {len(labels)} labels."
        )
    if labels and min(labels) < 1:
        raise FghashError(f"File {path} of data set 'dogs' has labels below 1 (they count from 1).")
    return files, [y - 1 for y in labels], path


def load_stanford_dogs(
    root: str | Path,
    split: str = "train",
    *,
    transform: Transform | None = None,
    skip_corrupt: bool = False,
) -> ImageListDataset:
    """Load one split of Stanford Dogs; class names are the breed part of the folder names."""
    root = require_root(root, "dogs")
    image_dir = (
        "Images" if (root / "Images").is_dir() or not (root / "images").is_dir() else "images"
    )
    files, labels, _ = _read_dogs_list(root, split)
    names: dict[int, str] = {}
    other = "test" if split == "train" else "train"
    sources = [(files, labels)]
    if any((root / c).is_file() for c in (f"{other}_list.mat", f"lists/{other}_list.mat")):
        o_files, o_labels, _ = _read_dogs_list(root, other)
        sources.append((o_files, o_labels))
    for s_files, s_labels in sources:
        for f, y in zip(s_files, s_labels, strict=True):
            parts = PurePosixPath(f.replace("\\", "/")).parts
            folder = parts[0] if len(parts) > 1 else f"class_{y + 1:03d}"
            names.setdefault(y, folder.split("-", 1)[-1])
    num_classes = max(names) + 1 if names else 0
    class_names = [names.get(k, f"class_{k + 1:03d}") for k in range(num_classes)]
    return ImageListDataset(
        root,
        [f"{image_dir}/{f}" for f in files],
        labels,
        class_names,
        name="dogs",
        split=split,
        transform=transform,
        skip_corrupt=skip_corrupt,
    )


def load_stanford_cars(
    root: str | Path,
    split: str = "train",
    *,
    transform: Transform | None = None,
    skip_corrupt: bool = False,
) -> ImageListDataset:
    """Load one split of Stanford Cars from the devkit annotations."""
    root = require_root(root, "cars")
    meta_path = require_file(root, "devkit/cars_meta.mat", "cars")
    if split == "train":
        annos_path = require_file(root, "devkit/cars_train_annos.mat", "cars")
        image_dir = "cars_train"
    else:
        annos_path = first_existing(
            root,
            ["cars_test_annos_withlabels.mat", "devkit/cars_test_annos_withlabels.mat"],
            "cars",
            "labelled test annotations",
        )
        image_dir = "cars_test"
    class_names = [
        _as_str(c) for c in _field(load_mat(meta_path, "cars"), "class_names", meta_path, "cars")
    ]
    annos = _field(load_mat(annos_path, "cars"), "annotations", annos_path, "cars")
    fields = annos.dtype.names or ()
    if "fname" not in fields or "class" not in fields:
        raise FghashError(
            f"File {annos_path} of data set 'cars' has annotations without 'fname' and 'class' fields "
            "(cars_test_annos.mat has no labels: use cars_test_annos_withlabels.mat)."
        )
    files = [_as_str(a["fname"]) for a in annos]
    labels = [_as_int(a["class"]) - 1 for a in annos]
    return ImageListDataset(
        root,
        [f"{image_dir}/{f}" for f in files],
        labels,
        class_names,
        name="cars",
        split=split,
        transform=transform,
        skip_corrupt=skip_corrupt,
    )
