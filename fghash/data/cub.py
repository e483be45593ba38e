"""CUB-200-2011 (Wah et al., 2011): 200 bird species, 5,994 train / 5,794 test images,
312 binary attributes per image annotated by MTurk workers.

Layout (``root`` is the extracted ``CUB_200_2011`` folder)::

    images.txt              <image_id> <relative path under images/>
    image_class_labels.txt  <image_id> <class_id 1..200>
    train_test_split.txt    <image_id> <1 = train, 0 = test>
    classes.txt             <class_id> <class name>
    images/<class>/<file>.jpg
    attributes/image_attribute_labels.txt  <image_id> <attribute_id> <is_present> <certainty> <time>
    attributes.txt          <attribute_id> <name>   (the tarball puts it beside CUB_200_2011/)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fghash.data._files import read_table, require_file, require_root
from fghash.data.base import ImageListDataset, Transform
from fghash.errors import FghashError

__all__ = ["load_cub200"]

logger = logging.getLogger(__name__)

_NAME = "cub200"


def _read_attributes(
    root: Path, image_ids: list[int]
) -> tuple[np.ndarray | None, list[str] | None]:
    """Binary ``is_present`` matrix for ``image_ids`` (rows) and the attribute names."""
    labels_path = root / "attributes" / "image_attribute_labels.txt"
    if not labels_path.is_file():
        logger.info("CUB-200-2011: %s not found, loading without attributes", labels_path)
        return None, None
    names: dict[int, str] = {}
    for cand in (
        root / "attributes" / "attributes.txt",
        root / "attributes.txt",
        root.parent / "attributes.txt",
    ):
        if cand.is_file():
            names = read_table(cand, _NAME, int_keys=True)
            break
    row_of = {img: r for r, img in enumerate(image_ids)}
    rows, cols, vals = [], [], []
    # 3.7 million lines: parsed inline rather than through read_rows. Some lines of
    # the official file carry an extra column; only the first three fields matter.
    text = labels_path.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split(None, 3)
        if not fields:
            continue
        try:
            img, attr, present = int(fields[0]), int(fields[1]), int(fields[2])
        except (ValueError, IndexError):
            raise FghashError(
                f"Line {number} of {labels_path} (data set {_NAME!r}) is not "
                f"'<image_id> <attribute_id> <is_present> ...': {line.strip()!r}."
            ) from None
        r = row_of.get(img)
        if r is not None:
            rows.append(r)
            cols.append(attr)
            vals.append(present)
    num_attrs = max(max(names, default=0), max(cols, default=0))
    if min(cols, default=1) < 1:
        raise FghashError(f"{labels_path} (data set {_NAME!r}) has attribute ids below 1.")
    attrs = np.zeros((len(image_ids), num_attrs), dtype=np.uint8)
    attrs[np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64) - 1] = (
        np.asarray(vals) > 0
    ).astype(np.uint8)
    attr_names = [names.get(j, f"attribute_{j:03d}") for j in range(1, num_attrs + 1)]
    return attrs, attr_names


def load_cub200(
    root: str | Path,
    split: str = "train",
    *,
    transform: Transform | None = None,
    skip_corrupt: bool = False,
) -> ImageListDataset:
    """Load one split of CUB-200-2011 with its 312 binary attributes (``attributes``)."""
    root = require_root(root, _NAME)
    images_path = require_file(root, "images.txt", _NAME)
    labels_path = require_file(root, "image_class_labels.txt", _NAME)
    split_path = require_file(root, "train_test_split.txt", _NAME)
    classes_path = require_file(root, "classes.txt", _NAME)

    images = read_table(images_path, _NAME, int_keys=True)
    labels = read_table(labels_path, _NAME, int_keys=True, int_values=True)
    is_train = read_table(split_path, _NAME, int_keys=True, int_values=True)
    classes = read_table(classes_path, _NAME, int_keys=True)
    class_ids = sorted(classes)
    label_of = {cid: k for k, cid in enumerate(class_ids)}

    want = 1 if split == "train" else 0
    ids = []
    for img in sorted(images):
        if img not in labels or img not in is_train:
            raise FghashError(
                f"Image id {img} of {images_path} has no entry in {labels_path.name} or "
                f"{split_path.name} (data set {_NAME!r})."
            )
        if labels[img] not in label_of:
            raise FghashError(
                f"Image id {img} has class id {labels[img]}, which {classes_path} does not list "
                f"(data set {_NAME!r})."
            )
        if is_train[img] == want:
            ids.append(img)
    attrs, attr_names = _read_attributes(root, ids)
    return ImageListDataset(
        root,
        ["images/" + images[i] for i in ids],
        [label_of[labels[i]] for i in ids],
        [classes[c] for c in class_ids],
        name=_NAME,
        split=split,
        attributes=attrs,
        attribute_names=attr_names,
        transform=transform,
        skip_corrupt=skip_corrupt,
    )
