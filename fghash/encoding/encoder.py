"""A Python encoder for a trained run: ``fghash.load(run).encode(images)``.

Image queries (``fghash search --image``) and ``fghash add --images`` encode through it;
it runs the network with :func:`fghash.encoding.loop.run_batches`, as ``fghash encode``
and training validation do, so an image gets the same code whichever path encodes it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fghash.codes import signs_to_codes
from fghash.encoding.loop import (
    HostCopies,
    eval_autocast,
    eval_mode,
    prepare_model,
    run_batches,
)
from fghash.errors import FghashError
from fghash.runs.config import TrainConfig
from fghash.runs.folder import load_run
from fghash.util.device import resolve_device

__all__ = ["HashEncoder", "load"]


class HashEncoder:
    """Encode images with a trained run: ``fghash.load(run_dir).encode(images)``.

    ``images`` may be a tensor batch ``[B, 3, H, W]`` (or one ``[3, H, W]`` image) that is
    already model input (transformed and normalised), or one or more PIL images or file
    paths, which get the run's evaluation transform (resize, centre crop, normalise).
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, device: Any) -> None:
        from fghash.data import build_transform

        self.device = resolve_device(device)
        self.model = prepare_model(model, self.device).eval()
        self.config = config
        self.autocast = eval_autocast(config, self.device)
        self.transform = build_transform(False, config.image_size, resize=config.resize)

    @property
    def bits(self) -> int:
        return self.config.bits

    def _load_image(self, item: Any) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        if isinstance(item, Image.Image):
            return self.transform(item.convert("RGB"))
        path = Path(item)
        try:
            with Image.open(path) as im:
                return self.transform(im.convert("RGB"))
        except FileNotFoundError:
            raise FghashError(f"{path}: no such image file.") from None
        except (UnidentifiedImageError, OSError) as e:
            raise FghashError(f"{path} could not be read as an image ({e}).") from None

    def _tensors(self, images: Any, batch_size: int) -> Iterator[torch.Tensor]:
        if torch.is_tensor(images):
            t = images.unsqueeze(0) if images.dim() == 3 else images
            if t.dim() != 4 or t.shape[1] != 3:
                raise FghashError(f"expected an image tensor [B, 3, H, W], got {list(t.shape)}.")
            for s in range(0, len(t), batch_size):
                yield t[s : s + batch_size].float()
            return
        from PIL import Image

        if isinstance(images, (str, os.PathLike, Image.Image)):
            images = [images]
        items = list(images) if isinstance(images, Iterable) else [images]
        for s in range(0, len(items), batch_size):
            yield torch.stack([self._load_image(x) for x in items[s : s + batch_size]])

    def _batches(self, images: Any, batch_size: int) -> Iterator[tuple[torch.Tensor, None, range]]:
        """Batches shaped as a data loader's, pinned on CUDA as :func:`image_loader` pins."""
        done = 0
        for t in self._tensors(images, batch_size):
            if self.device.type == "cuda" and t.device.type == "cpu":
                t = t.pin_memory()
            yield t, None, range(done, done + len(t))
            done += len(t)

    def _run(self, images: Any, batch_size: int, backbone: bool) -> np.ndarray:
        outs = HostCopies()
        with eval_mode(self.model):
            batches = self._batches(images, batch_size)
            for out in run_batches(self.model, batches, device=self.device, autocast=self.autocast):
                outs.add(out.backbone if backbone else out.relaxed)
        return outs.numpy(np.zeros((0, self.bits), np.float32))

    def encode_relaxed(self, images: Any, batch_size: int = 64) -> np.ndarray:
        """Relaxed codes ``tanh(v)``, float32 ``[N, bits]``."""
        return self._run(images, batch_size, backbone=False)

    def encode(self, images: Any, batch_size: int = 64) -> np.ndarray:
        """Packed binary codes, uint8 ``[N, ceil(bits/8)]`` (schema-v1 bit order)."""
        return signs_to_codes(self.encode_relaxed(images, batch_size))

    def features(self, images: Any, batch_size: int = 64) -> np.ndarray:
        """Pooled backbone features, float32 ``[N, d]``."""
        return self._run(images, batch_size, backbone=True)


def load(run_dir: str | os.PathLike[str], device: str = "auto") -> HashEncoder:
    """A :class:`HashEncoder` for the trained run in ``run_dir``."""
    cfg, _, model = load_run(Path(run_dir), device)
    return HashEncoder(model, cfg, device)
