"""FGVC-Aircraft 2013b (Maji et al., 2013): 10,000 images of 100 aircraft variants,
6,667 trainval / 3,333 test.

Layout (``root`` is the extracted ``fgvc-aircraft-2013b`` folder)::

    data/variants.txt                 one variant name per line (label = line order)
    data/images_variant_trainval.txt  <image id> <variant name, may contain spaces>
    data/images_variant_test.txt
    data/images/<image id>.jpg

``split="train"`` reads the official ``trainval`` list, as the hashing papers do.
The images keep their 20-pixel copyright banner at the bottom; crop it in the
transform if wanted.
"""

from __future__ import annotations

from pathlib import Path

from fghash.data._files import read_rows, require_file, require_root
from fghash.data.base import ImageListDataset, Transform
from fghash.errors import FghashError

__all__ = ["load_aircraft"]

_NAME = "aircraft"


def load_aircraft(
    root: str | Path,
    split: str = "train",
    *,
    transform: Transform | None = None,
    skip_corrupt: bool = False,
) -> ImageListDataset:
    """Load the trainval (``split="train"``) or test split of FGVC-Aircraft, variant level."""
    root = require_root(root, _NAME)
    variants_path = require_file(root, "data/variants.txt", _NAME)
    list_name = "trainval" if split == "train" else "test"
    list_path = require_file(root, f"data/images_variant_{list_name}.txt", _NAME)

    variants = [line.strip() for line in variants_path.read_text(encoding="utf-8").splitlines()]
    variants = [v for v in variants if v]
    label_of = {v: k for k, v in enumerate(variants)}
    paths, labels = [], []
    for number, (image_id, variant) in read_rows(list_path, _NAME, min_fields=2, maxsplit=1):
        if variant not in label_of:
            raise FghashError(
                f"Line {number} of {list_path} names variant {variant!r}, which {variants_path} "
                f"does not list (data set {_NAME!r})."
            )
        paths.append(f"data/images/{image_id}.jpg")
        labels.append(label_of[variant])
    return ImageListDataset(
        root,
        paths,
        labels,
        variants,
        name=_NAME,
        split=split,
        transform=transform,
        skip_corrupt=skip_corrupt,
    )
