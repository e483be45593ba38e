"""Two layouts for any image collection: label lists, and one folder per class.

``list`` (``root`` holds the lists; paths are relative to ``root``)::

    train.txt     <relative/path> <label>      one image per line, labels 0..C-1
    test.txt
    classes.txt   optional: one class name per line (line k names label k)

Without ``classes.txt`` the classes are ``class_000 ...`` up to the largest label
found in either list, so train and test always agree on the number of classes.

``imagefolder`` (like torchvision's ``ImageFolder``, one tree per split)::

    train/<class>/<image>.{jpg,jpeg,png,bmp,ppm,pgm,tif,tiff,webp}
    test/<class>/<image>...

Classes are the sorted union of the class folder names of both splits; files
within a class are taken in sorted order.
"""

from __future__ import annotations

from pathlib import Path

from fghash.data._files import (
    IMAGE_EXTENSIONS,
    read_labelled_list,
    read_rows,
    require_file,
    require_root,
)
from fghash.data.base import ImageListDataset, Transform
from fghash.errors import FghashError

__all__ = ["load_list", "load_imagefolder", "read_class_names"]


def read_class_names(path: Path, dataset: str) -> list[str]:
    """One class name per non-blank line (the whole line, spaces kept)."""
    return [line for _, (line,) in read_rows(path, dataset, maxsplit=0)]


def load_list(
    root: str | Path,
    split: str = "train",
    *,
    transform: Transform | None = None,
    skip_corrupt: bool = False,
    name: str = "list",
) -> ImageListDataset:
    """Load ``root/{split}.txt`` (lines ``relative/path label``) with optional ``classes.txt``."""
    root = require_root(root, name)
    paths, labels = read_labelled_list(require_file(root, f"{split}.txt", name), name)
    classes_path = root / "classes.txt"
    if classes_path.is_file():
        class_names = read_class_names(classes_path, name)
        if labels and max(labels) >= len(class_names):
            raise FghashError(
                f"{root / f'{split}.txt'} uses label {max(labels)} but {classes_path} names only "
                f"{len(class_names)} classes (data set {name!r})."
            )
    else:
        top = max(labels, default=-1)
        other = root / ("test.txt" if split == "train" else "train.txt")
        if other.is_file():
            top = max(top, max(read_labelled_list(other, name)[1], default=-1))
        class_names = [f"class_{k:03d}" for k in range(top + 1)]
    return ImageListDataset(
        root,
        paths,
        labels,
        class_names,
        name=name,
        split=split,
        transform=transform,
        skip_corrupt=skip_corrupt,
    )


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_imagefolder(
    root: str | Path,
    split: str = "train",
    *,
    transform: Transform | None = None,
    skip_corrupt: bool = False,
) -> ImageListDataset:
    """Load ``root/{split}/<class>/*`` with classes sorted by folder name across both splits."""
    root = require_root(root, "imagefolder")
    split_dir = root / split
    if not split_dir.is_dir():
        raise FghashError(
            f"Data set 'imagefolder' expects the folder {split_dir} with one sub-folder per class; "
            "check --data-root and the layout in docs/datasets.md."
        )
    classes = set(_class_folders(split_dir))
    other = root / ("test" if split == "train" else "train")
    if other.is_dir():
        classes |= set(_class_folders(other))
    class_names = sorted(classes)
    label_of = {c: k for k, c in enumerate(class_names)}
    paths, labels = [], []
    for cls in _class_folders(split_dir):
        files = sorted(
            p
            for p in (split_dir / cls).rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        paths += [p.relative_to(root).as_posix() for p in files]
        labels += [label_of[cls]] * len(files)
    if not paths:
        raise FghashError(
            f"Data set 'imagefolder' found no images under {split_dir}/<class>/ "
            f"(extensions {', '.join(IMAGE_EXTENSIONS)})."
        )
    return ImageListDataset(
        root,
        paths,
        labels,
        class_names,
        name="imagefolder",
        split=split,
        transform=transform,
        skip_corrupt=skip_corrupt,
    )
