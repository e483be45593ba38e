"""Fine-grained image data sets: official layouts, generic layouts, and a synthetic one.

>>> from fghash.data import load_dataset, build_transform
>>> ds = load_dataset("cub200", "data/CUB_200_2011", split="train",
...                   transform=build_transform(train=True))          # doctest: +SKIP
>>> image, label, index = ds[0]                                         # doctest: +SKIP

Importing this package does not import torch; :func:`build_transform` and
:func:`collate_skip_none` do, when called.
"""

from fghash.data.base import ImageListDataset, collate_skip_none
from fghash.data.registry import DATASETS, list_datasets, load_dataset
from fghash.data.synthetic import generate_synthetic
from fghash.data.transforms import build_transform

__all__ = [
    "DATASETS",
    "ImageListDataset",
    "build_transform",
    "collate_skip_none",
    "generate_synthetic",
    "list_datasets",
    "load_dataset",
]
