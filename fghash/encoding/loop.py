"""Run a hashing network over items of a data set: relaxed codes (and features) out.

Shared by training (its validation codes) and encoding (codes files), which must not
import each other. Evaluation runs in eval mode without the image decoders (the
model's ``embed``), under autocast when asked (``amp``, CUDA only).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from fghash.encoding.positions import PositionDataset
from fghash.util.device import resolve_device
from fghash.util.progress import Progress

__all__ = ["Encoded", "embed", "encode_images", "PROGRESS_EVERY_S"]

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 30.0  # seconds between progress lines while images are encoded


@dataclass
class Encoded:
    """Network outputs for the readable items of a view of a data set."""

    relaxed: np.ndarray  # float32 [n, k], tanh(v)
    backbone: np.ndarray | None  # float32 [n, d], pooled backbone features, when asked for
    positions: np.ndarray  # int64 [n], positions (into the requested indices) that were read
    skipped: int  # requested items that could not be read


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel keeps the net in .module


def embed(model: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tanh(v), x)`` as float32, skipping the image decoders when the model can."""
    net = _unwrap(model)
    if hasattr(net, "embed"):
        r, x = net.embed(images)
    else:
        out = net(images)
        r, x = out.relaxed, out.x
    return r.float(), x.float()


@torch.no_grad()
def encode_images(
    model: torch.nn.Module,
    ds: Any,
    indices: Sequence[int] | np.ndarray,
    *,
    device: Any = "cpu",
    batch_size: int = 64,
    num_workers: int = 0,
    features: bool = False,
    progress: bool = True,
    desc: str = "encoding",
    amp: bool = False,
    amp_dtype: torch.dtype = torch.bfloat16,
) -> Encoded:
    """Run the network (eval mode) over items ``indices`` of ``ds``; float32 unless ``amp``."""
    from tqdm.auto import tqdm

    from fghash.data import collate_skip_none

    device = resolve_device(device)
    cuda = device.type == "cuda"
    was_training = model.training
    model.eval()
    loader = DataLoader(
        PositionDataset(ds, indices),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_skip_none,
        pin_memory=cuda,
    )
    cast = torch.autocast("cuda", dtype=amp_dtype) if amp and cuda else nullcontext()
    rel: list[torch.Tensor] = []
    back: list[torch.Tensor] = []
    pos: list[np.ndarray] = []
    images_done = Progress(f"{desc}, images", len(indices), logger=log)
    try:
        for batch in tqdm(loader, desc=desc, leave=False, disable=None if progress else True):
            if batch is None or len(batch[0]) == 0:
                continue
            images, _, p = batch
            images = images.to(device, non_blocking=True)
            if cuda:
                images = images.contiguous(memory_format=torch.channels_last)
            with cast:
                r, x = embed(model, images)
            rel.append(r)  # kept on the device: one copy at the end, no sync per batch
            if features:
                back.append(x.cpu())  # d values an image: never held on the device
            pos.append(np.asarray(p, dtype=np.int64))
            if progress:
                images_done.step(n=len(p), every=PROGRESS_EVERY_S)
    finally:
        model.train(was_training)
    net = _unwrap(model)
    k = int(net.config.get("bits", 0)) if hasattr(net, "config") else 0
    relaxed = (
        torch.cat(rel).cpu().numpy().astype(np.float32) if rel else np.zeros((0, k), np.float32)
    )
    positions = np.concatenate(pos) if pos else np.zeros(0, np.int64)
    backbone = None
    if features:
        backbone = (
            torch.cat(back).cpu().numpy().astype(np.float32)
            if back
            else np.zeros((0, 0), np.float32)
        )
    return Encoded(relaxed, backbone, positions, len(indices) - len(positions))
