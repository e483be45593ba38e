"""What the sections share: their sizes (full or tiny) and generated image sets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Sizes", "sizes", "synthetic_set", "sync"]


@dataclass(frozen=True)
class Sizes:
    """The model and image sizes of one mode: the paper's on the GPU, tiny on the CPU."""

    backbone: str
    image_size: int
    batch_size: int
    bits: int


def sizes(tiny: bool) -> Sizes:
    return Sizes("resnet18", 32, 4, 12) if tiny else Sizes("resnet50", 224, 16, 48)


def synthetic_set(root: Path, images: int, image_size: int, classes: int = 8) -> Path:
    """A generated set of at least ``images`` training images (and a quarter as many
    test images) at ``image_size`` pixels, under ``root``."""
    from fghash.data import generate_synthetic

    per_class = -(-images // classes)
    return generate_synthetic(
        root,
        num_classes=classes,
        train_per_class=per_class,
        test_per_class=max(1, per_class // 4),
        image_size=image_size,
    )


def sync(device: Any) -> None:
    """Wait for the GPU (nothing on the CPU), so that a clock read after it is honest."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
