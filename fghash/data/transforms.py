"""Image pre-processing for training and evaluation (torchvision ``transforms.v2``).

Training (``crop="resize-crop"``): resize the shorter side to ``resize``, take a random
``image_size`` square crop, flip horizontally with probability 1/2, scale to [0, 1] and
normalise with the ImageNet mean and standard deviation. ``crop="random-resized"`` (the
A²-Net/SEMICON reference code) instead takes ``RandomResizedCrop(image_size)`` (a random
8–100 % area, aspect ratio 3/4–4/3, resized to the square) of the original image, then
the same flip and normalisation. Evaluation: the same
resize, a centre crop, and the same normalisation. ``resize`` defaults to
``round(image_size * 256 / 224)``, the usual 256 → 224 ratio of the
fine-grained hashing papers (ADSH, A2-Net, SEMICON).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fghash.errors import FghashError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "build_transform", "default_resize"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_resize(image_size: int) -> int:
    """Shorter-side resize used before cropping ``image_size``: 224 → 256."""
    return int(round(image_size * 256 / 224))


def build_transform(
    train: bool, image_size: int = 224, resize: int | None = None, crop: str = "resize-crop"
) -> Callable[[Any], Any]:
    """A callable mapping a PIL image to a normalised float32 tensor ``[3, image_size, image_size]``."""
    import torch
    from torchvision.transforms import v2

    if image_size < 1:
        raise FghashError(f"Image size must be a positive number of pixels, got {image_size}.")
    resize = default_resize(image_size) if resize is None else int(resize)
    if resize < image_size:
        raise FghashError(
            f"Resize {resize} is smaller than the crop size {image_size}; pass a resize of at least {image_size}."
        )
    if crop not in ("resize-crop", "random-resized"):
        raise FghashError(f"crop must be resize-crop or random-resized, got {crop!r}.")
    if train and crop == "random-resized":
        steps = [v2.ToImage(), v2.RandomResizedCrop(image_size, antialias=True)]
    else:
        cut = v2.RandomCrop(image_size) if train else v2.CenterCrop(image_size)
        steps = [v2.ToImage(), v2.Resize(resize, antialias=True), cut]
    if train:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps)
