"""The one dataset class every loader returns: a list of image paths with labels.

An :class:`ImageListDataset` is a map-style dataset (``len`` and ``[i]``) that a
``torch.utils.data.DataLoader`` can draw from; it does not subclass torch's
``Dataset`` so that reading a data set's layout never imports torch.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from fghash.errors import FghashError

__all__ = [
    "MAX_IMAGE_PIXELS",
    "ImageListDataset",
    "Transform",
    "check_image_size",
    "collate_skip_none",
]

logger = logging.getLogger(__name__)

#: What a data set applies to each decoded RGB image (see :func:`build_transform`).
Transform = Callable[[Image.Image], Any]

# What PIL raises for a file it cannot decode: unknown format, truncated data,
# broken headers (SyntaxError comes from some plugins), absurd sizes.
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
)


#: Most pixels fghash decodes from one image (10,000 x 10,000). The header is checked
#: before any pixel is decoded, so a small file declaring a huge canvas (a decompression
#: bomb) costs nothing; Pillow's own warning is left to this check, its error still counts.
MAX_IMAGE_PIXELS = 100_000_000


def _check_pixels(im: Image.Image, path: str | os.PathLike[str]) -> None:
    w, h = im.size
    if w * h > MAX_IMAGE_PIXELS:
        raise Image.DecompressionBombError(
            f"{w} x {h} pixels is more than fghash decodes ({MAX_IMAGE_PIXELS:,} pixels); "
            "it may be a decompression bomb"
        )


def _open_checked(path: str | os.PathLike[str]) -> Image.Image:
    """``Image.open`` with :data:`MAX_IMAGE_PIXELS` checked on the header."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(path)
    try:
        _check_pixels(im, path)
    except BaseException:
        im.close()
        raise
    return im


def check_image_size(path: str | os.PathLike[str]) -> None:
    """Refuse an image file that declares more than :data:`MAX_IMAGE_PIXELS` pixels,
    reading its header only. Other problems (missing, not an image) are left to the
    code that decodes it, which names them."""
    try:
        _open_checked(path).close()
    except Image.DecompressionBombError as e:
        raise FghashError(f"{path} is too large to read as an image: {e}.") from None
    except (FileNotFoundError, *_DECODE_ERRORS):
        return


class ImageListDataset:
    """Images of one split of a data set, with integer labels and optional attributes.

    ``ds[i]`` returns ``(image, label, index)``: ``image`` is an RGB ``PIL.Image``
    when ``transform`` is None, else ``transform(image)``; ``label`` is an int in
    ``0..num_classes-1``; ``index`` is the item's position in the split as loaded
    (``ds.indices[i]``). For a freshly loaded split ``index == i``; a
    :meth:`subset` keeps its parent's positions, so ADSH-style training can use
    ``index`` to look up the item's row in database-sized arrays.

    With ``skip_corrupt=True`` an image PIL cannot decode makes ``ds[i]`` return
    ``None`` (a warning is logged once per file); batch with
    :func:`collate_skip_none`. Otherwise it raises :class:`FghashError`.
    A missing image file always raises.
    """

    def __init__(
        self,
        root: str | Path,
        paths: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        class_names: Sequence[str],
        *,
        name: str = "list",
        split: str = "train",
        attributes: np.ndarray | None = None,
        attribute_names: Sequence[str] | None = None,
        indices: np.ndarray | None = None,
        transform: Transform | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        self.root = Path(root)
        self.paths = [str(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.class_names = [str(c) for c in class_names]
        self.name = name
        self.split = split
        self.transform = transform
        self.skip_corrupt = bool(skip_corrupt)
        n = len(self.paths)
        if self.labels.shape[0] != n:
            raise ValueError(f"{n} paths but {self.labels.shape[0]} labels")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise FghashError(
                f"Data set {name!r} ({split}) has labels outside 0..{len(self.class_names) - 1}; "
                "check its label and class files."
            )
        if attributes is not None:
            attributes = np.asarray(attributes, dtype=np.uint8)
            if attributes.ndim != 2 or attributes.shape[0] != n:
                raise ValueError(f"attributes must have shape [{n}, A], got {attributes.shape}")
            if attribute_names is None:
                attribute_names = [f"attribute_{j + 1:03d}" for j in range(attributes.shape[1])]
            if len(attribute_names) != attributes.shape[1]:
                raise ValueError("attribute_names must name every attribute column")
        self.attributes = attributes
        self.attribute_names = None if attributes is None else [str(a) for a in attribute_names]
        self.indices = (
            np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
        )
        if self.indices.shape != (n,):
            raise ValueError("indices must hold one position per item")
        self._warned: set[str] = set()

    @property
    def num_classes(self) -> int:
        """Number of classes of the whole data set (not only those present here)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        attrs = "" if self.attributes is None else f", attributes={self.attributes.shape[1]}"
        return (
            f"ImageListDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"classes={self.num_classes}{attrs}, root='{self.root}')"
        )

    def load_image(self, i: int) -> Image.Image | None:
        """Decode item ``i`` as an RGB image; ``None`` if corrupt and ``skip_corrupt``."""
        rel = self.paths[i]
        path = self.root / rel
        try:
            with _open_checked(path) as im:
                return im.convert("RGB")
        except FileNotFoundError:
            raise FghashError(
                f"Image file {path} listed by data set {self.name!r} ({self.split}) does not exist; "
                "check --data-root and the data set's layout (docs/datasets.md)."
            ) from None
        except _DECODE_ERRORS as exc:
            if not self.skip_corrupt:
                raise FghashError(
                    f"Image file {path} cannot be decoded ({exc}); replace or remove it, "
                    "or pass skip_corrupt=True to skip unreadable images."
                ) from exc
            if rel not in self._warned:
                self._warned.add(rel)
                logger.warning("skipping unreadable image %s: %s", path, exc)
            return None

    def __getitem__(self, i: int) -> tuple[Any, int, int] | None:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        image = self.load_image(i)
        if image is None:
            return None
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i]), int(self.indices[i])

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageListDataset:
        """The items at ``indices`` (positions in this dataset), same classes and settings."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset indices out of range for {len(self)} items")
        return ImageListDataset(
            self.root,
            [self.paths[k] for k in idx],
            self.labels[idx],
            self.class_names,
            name=self.name,
            split=self.split,
            attributes=None if self.attributes is None else self.attributes[idx],
            attribute_names=self.attribute_names,
            indices=self.indices[idx],
            transform=self.transform,
            skip_corrupt=self.skip_corrupt,
        )

    def class_counts(self) -> np.ndarray:
        """Number of items per class, int64 ``[num_classes]``."""
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)


def collate_skip_none(batch: Sequence[tuple[Any, int, int] | None]) -> tuple[Any, Any, Any]:
    """Collate ``(image, label, index)`` items, dropping ``None`` (skipped corrupt images).

    Returns ``(images, labels, indices)``: images stacked into a tensor when they
    are tensors (a list otherwise, e.g. PIL images), labels and indices as int64
    tensors. A batch where every item was skipped gives empty tensors.
    """
    import torch

    items = [b for b in batch if b is not None]
    labels = torch.tensor([b[1] for b in items], dtype=torch.int64)
    indices = torch.tensor([b[2] for b in items], dtype=torch.int64)
    images: Any = [b[0] for b in items]
    if items and all(isinstance(im, torch.Tensor) for im in images):
        images = torch.stack(images, 0)
    elif not items:
        images = torch.empty(0)
    return images, labels, indices
