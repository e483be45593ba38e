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

Small images: ``RandomResizedCrop``'s smallest crop (8 % of the area, about 28 % of the
side) is an 18-pixel square of a 64-pixel image, upsampled; at 32 px it is 9 pixels. On a
set of small images at 32 px, tie-aware mAP was about 0.81 with it against about 0.97 with
``resize-crop``. :func:`build_transform` logs one warning when a training transform uses
it at :data:`SMALL_IMAGE` pixels or fewer (:func:`crop_warning`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fghash.errors import FghashError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SMALL_IMAGE",
    "ResizeCrop",
    "build_transform",
    "crop_warning",
    "default_resize",
]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMALL_IMAGE = 64  # crop side (px) at or under which the paper's random-resized crop warns
_MIN_SCALE = 0.08  # RandomResizedCrop's default smallest area (the reference code's)


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
    if train and (warning := crop_warning(image_size, crop)):
        log.warning("%s", warning)
    if train and crop == "random-resized":
        steps = [v2.ToImage(), v2.RandomResizedCrop(image_size, antialias=True)]
        steps.append(v2.RandomHorizontalFlip(p=0.5))
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        return v2.Compose(steps)
    return ResizeCrop(image_size, resize, train)


def crop_warning(image_size: int, crop: str) -> str | None:
    """The warning for a training crop that is too aggressive for ``image_size``, or None.

    Rule: the paper's ``random-resized`` crop (area 8–100 %) at :data:`SMALL_IMAGE` pixels
    or fewer; ``resize-crop`` keeps the whole object at any size.
    """
    if crop != "random-resized" or image_size > SMALL_IMAGE:
        return None
    side = round(image_size * _MIN_SCALE**0.5)
    return (
        f"--train-crop random-resized at {image_size} px keeps as little as 8 % of an image "
        f"({side}x{side} px, upsampled); on small images this costs mAP (about 0.97 -> 0.81 "
        "on a 32-px set): consider --train-crop resize-crop (docs/training.md, small images)."
    )


class ResizeCrop:
    """``Compose([ToImage(), Resize(resize), RandomCrop(size) | CenterCrop(size),
    RandomHorizontalFlip() (train only), ToDtype(float32, scale=True), Normalize(ImageNet)])``
    as one call of torchvision's functional kernels.

    The same kernels, random draws (crop top, crop left, flip) and results as the
    ``transforms.v2`` pipeline, without its per-transform dispatch, which dominates on
    small images (a test checks the tensors are bit-identical).
    """

    def __init__(self, size: int, resize: int, train: bool) -> None:
        self.size, self.resize, self.train = size, resize, train
        self.mean, self.std = list(IMAGENET_MEAN), list(IMAGENET_STD)

    def __call__(self, image: Any) -> Any:
        import torch
        from torchvision.transforms.v2 import functional as F

        size = self.size
        x = F.to_image(image).as_subclass(torch.Tensor)
        x = F.resize(x, [self.resize], antialias=True)
        if self.train:
            h, w = x.shape[-2:]
            top = int(torch.randint(0, h - size + 1, size=()).item())
            left = int(torch.randint(0, w - size + 1, size=()).item())
            x = F.crop(x, top, left, size, size)
            if torch.rand(1) < 0.5:
                x = F.horizontal_flip(x)
        else:
            x = F.center_crop(x, [size])
        return F.normalize(F.to_dtype(x, torch.float32, scale=True), self.mean, self.std)

    def __repr__(self) -> str:
        cut = "RandomCrop+RandomHorizontalFlip" if self.train else "CenterCrop"
        return f"ResizeCrop(resize={self.resize}, {cut}({self.size}), ToDtype, Normalize)"
