"""NABirds (Van Horn et al., CVPR 2015): 48,562 images of North American birds,
23,929 train / 24,633 test, 555 leaf categories of a class hierarchy.

Layout (``root`` is the extracted ``nabirds`` folder)::

    images.txt              <image uuid> <relative path under images/>
    image_class_labels.txt  <image uuid> <class_id>
    train_test_split.txt    <image uuid> <1 = train, 0 = test>
    classes.txt             <class_id> <class name, may contain spaces>
    hierarchy.txt           <child class_id> <parent class_id>
    images/<4-digit class folder>/<uuid>.jpg

``classes.txt`` lists every node of the hierarchy (1,011 of them, from the root
"Birds" down), but images are labelled only with leaf classes. The loader keeps
the class ids that images of either split actually use, checks they are leaves
of ``hierarchy.txt``, and renumbers them ``0..C-1`` in increasing class-id order
(C = 555 for the official release), the same numbering for train and test.
"""

from __future__ import annotations

from pathlib import Path

from fghash.data._files import read_table, require_file, require_root
from fghash.data.base import ImageListDataset, Transform
from fghash.errors import FghashError

__all__ = ["load_nabirds"]

_NAME = "nabirds"


def load_nabirds(
    root: str | Path,
    split: str = "train",
    *,
    transform: Transform | None = None,
    skip_corrupt: bool = False,
) -> ImageListDataset:
    """Load one split of NABirds with leaf classes renumbered to ``0..C-1``."""
    root = require_root(root, _NAME)
    images_path = require_file(root, "images.txt", _NAME)
    labels_path = require_file(root, "image_class_labels.txt", _NAME)
    split_path = require_file(root, "train_test_split.txt", _NAME)
    classes_path = require_file(root, "classes.txt", _NAME)
    hierarchy_path = require_file(root, "hierarchy.txt", _NAME)

    images = read_table(images_path, _NAME)
    labels = read_table(labels_path, _NAME, int_values=True)
    is_train = read_table(split_path, _NAME, int_values=True)
    classes = read_table(classes_path, _NAME, int_keys=True)
    parents = read_table(hierarchy_path, _NAME, int_keys=True, int_values=True)
    inner = set(parents.values())

    for uuid in images:
        if uuid not in labels or uuid not in is_train:
            raise FghashError(
                f"Image {uuid} of {images_path} has no entry in {labels_path.name} or "
                f"{split_path.name} (data set {_NAME!r})."
            )
    used = sorted({labels[u] for u in images})
    for cid in used:
        if cid not in classes:
            raise FghashError(
                f"Class id {cid} used in {labels_path} is not listed in {classes_path} (data set {_NAME!r})."
            )
        if cid in inner:
            raise FghashError(
                f"Class id {cid} ({classes[cid]}) used in {labels_path} is an inner node of "
                f"{hierarchy_path}, not a leaf class (data set {_NAME!r})."
            )
    label_of = {cid: k for k, cid in enumerate(used)}
    want = 1 if split == "train" else 0
    # images.txt order is the official order; keep it.
    keep = [u for u in images if is_train[u] == want]
    return ImageListDataset(
        root,
        ["images/" + images[u] for u in keep],
        [label_of[labels[u]] for u in keep],
        [classes[c] for c in used],
        name=_NAME,
        split=split,
        transform=transform,
        skip_corrupt=skip_corrupt,
    )
