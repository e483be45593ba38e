"""Data sets by name: ``load_dataset("cub200", root, split="train")``.

Every entry maps a name to a loader ``(root, split, *, transform, skip_corrupt)``
returning an :class:`~fghash.data.base.ImageListDataset`, with a one-line
description; ``fghash train --dataset NAME`` takes its choices from
:func:`list_datasets`. The folder layouts are in ``docs/datasets.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fghash.data.aircraft import load_aircraft
from fghash.data.base import ImageListDataset
from fghash.data.cub import load_cub200
from fghash.data.food101 import load_food101
from fghash.data.generic import load_imagefolder, load_list
from fghash.data.nabirds import load_nabirds
from fghash.data.stanford import load_stanford_cars, load_stanford_dogs
from fghash.data.synthetic import load_synthetic
from fghash.data.vegfru import load_vegfru
from fghash.errors import FghashError

__all__ = ["DatasetEntry", "DATASETS", "SPLITS", "list_datasets", "load_dataset"]

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetEntry:
    """A registered data set: its loader and what it is."""

    loader: Callable[..., ImageListDataset]
    description: str


DATASETS: dict[str, DatasetEntry] = {
    "cub200": DatasetEntry(
        load_cub200, "CUB-200-2011: 200 bird species, 5,994/5,794 images, 312 attributes"
    ),
    "aircraft": DatasetEntry(
        load_aircraft, "FGVC-Aircraft 2013b: 100 variants, 6,667 trainval/3,333 test"
    ),
    "food101": DatasetEntry(load_food101, "Food-101: 101 dishes, 75,750/25,250 images"),
    "nabirds": DatasetEntry(load_nabirds, "NABirds: 555 leaf bird classes, 23,929/24,633 images"),
    "vegfru": DatasetEntry(
        load_vegfru, "VegFru: 292 vegetables and fruits, 29,200 train/116,931 test"
    ),
    "dogs": DatasetEntry(load_stanford_dogs, "Stanford Dogs: 120 breeds, 12,000/8,580 images"),
    "cars": DatasetEntry(load_stanford_cars, "Stanford Cars: 196 models, 8,144/8,041 images"),
    "list": DatasetEntry(
        load_list, "any images: root/train.txt, root/test.txt of '<path> <label>' lines"
    ),
    "imagefolder": DatasetEntry(load_imagefolder, "any images: root/{train,test}/<class>/<image>"),
    "synthetic": DatasetEntry(
        load_synthetic, "embedded procedural birds (generated on first use, no download)"
    ),
}


def list_datasets() -> list[str]:
    """Registered data set names, in registry order."""
    return list(DATASETS)


def load_dataset(
    name: str,
    root: str | Path,
    split: str = "train",
    transform: Callable[[Any], Any] | None = None,
    skip_corrupt: bool = False,
) -> ImageListDataset:
    """Load split ``"train"`` or ``"test"`` of the data set ``name`` stored under ``root``."""
    if name not in DATASETS:
        raise FghashError(f"Unknown data set {name!r}; choose one of: {', '.join(DATASETS)}.")
    if split not in SPLITS:
        raise FghashError(
            f"Unknown split {split!r} for data set {name!r}; choose 'train' or 'test'."
        )
    return DATASETS[name].loader(root, split, transform=transform, skip_corrupt=skip_corrupt)
