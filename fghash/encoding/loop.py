"""Run a trained hashing network over images: the one loop behind every encoder.

Training validation (:mod:`fghash.training.loop`), ``fghash encode``
(:func:`fghash.encoding.encode.encode_run`), image queries and ``fghash add --images``
(:class:`fghash.encoding.encode.HashEncoder`) all pass their batches through
:func:`run_batches`, so the same images and run give the same codes whichever path
encodes them. The choices are made here once: eval mode without the image decoders (the
model's ``embed``), no autograd, autocast as the run trained (:func:`eval_autocast`: the
config's ``amp``, CUDA only), pinned host memory and channels-last tensors on CUDA.

Shared by training and encoding, which must not import each other.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from fghash.encoding.positions import PositionDataset
from fghash.util.device import resolve_device
from fghash.util.progress import Progress

__all__ = [
    "BatchOutput",
    "Encoded",
    "PROGRESS_EVERY_S",
    "amp_dtype",
    "embed",
    "encode_images",
    "eval_autocast",
    "eval_mode",
    "image_loader",
    "prepare_model",
    "run_batches",
]

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 30.0  # seconds between progress lines while images are encoded


@dataclass
class Encoded:
    """Network outputs for the readable items of a view of a data set."""

    relaxed: np.ndarray  # float32 [n, k], tanh(v)
    backbone: np.ndarray | None  # float32 [n, d], pooled backbone features, when asked for
    positions: np.ndarray  # int64 [n], positions (into the requested indices) that were read
    skipped: int  # requested items that could not be read


@dataclass
class BatchOutput:
    """The network's outputs for one batch; ``relaxed is None`` when no item was readable."""

    positions: np.ndarray  # int64 [b], the batch's items (positions into the view)
    relaxed: torch.Tensor | None  # float32 [b, k] on the device, tanh(v)
    backbone: torch.Tensor | None  # float32 [b, d] on the device, pooled backbone features


def amp_dtype(cfg: Any, device: torch.device) -> torch.dtype:
    """The autocast dtype a config names (``cfg.amp_dtype``); float16 on a GPU without
    bfloat16. Training adds a GradScaler for float16."""
    if cfg.amp_dtype == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        log.info("this GPU has no bfloat16; mixed precision uses float16")
        return torch.float16
    return torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16


def eval_autocast(cfg: Any, device: Any) -> torch.dtype | None:
    """The autocast dtype every encoder of a run uses, None for float32: the run's
    ``amp`` choice, on CUDA only (as in training)."""
    device = resolve_device(device)
    return amp_dtype(cfg, device) if cfg.amp and device.type == "cuda" else None


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` on ``device``, channels-last on CUDA (as its inputs will be)."""
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def image_loader(
    ds: Any,
    indices: Sequence[int] | np.ndarray,
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device,
) -> DataLoader:
    """Batches ``(images, labels, positions)`` of items ``indices`` of ``ds`` in order,
    unreadable items dropped (a batch of none is ``None``); pinned memory on CUDA."""
    from fghash.data import collate_skip_none

    return DataLoader(
        PositionDataset(ds, indices),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_skip_none,
        pin_memory=device.type == "cuda",
    )


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode for the ``with`` block; its training flag is restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


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


def run_batches(
    model: torch.nn.Module,
    batches: Iterable[Any],
    *,
    device: torch.device,
    autocast: torch.dtype | None = None,
    meter: Progress | None = None,
    desc: str | None = None,
) -> Iterator[BatchOutput]:
    """The network's outputs for each batch ``(images, labels, positions)`` (or ``None``),
    one :class:`BatchOutput` per batch, in order. The caller puts ``model`` in eval mode
    (:func:`eval_mode`). ``meter`` counts images; ``desc`` shows a progress bar."""
    cuda = device.type == "cuda"
    cast = (
        torch.autocast("cuda", dtype=autocast) if autocast is not None and cuda else nullcontext()
    )
    if desc is not None:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=desc, leave=False, disable=None)
    for batch in batches:
        if batch is None or len(batch[0]) == 0:
            yield BatchOutput(np.zeros(0, np.int64), None, None)
            continue
        images, _, positions = batch
        images = images.to(device, non_blocking=True)
        if cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), cast:
            r, x = embed(model, images)
        if meter is not None:
            meter.step(n=len(positions), every=PROGRESS_EVERY_S)
        yield BatchOutput(np.asarray(positions, dtype=np.int64), r, x)


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
    autocast: torch.dtype | None = None,
) -> Encoded:
    """Run the network (eval mode) over items ``indices`` of ``ds``, all outputs in memory."""
    device = resolve_device(device)
    loader = image_loader(
        ds, indices, batch_size=batch_size, num_workers=num_workers, device=device
    )
    meter = Progress(f"{desc}, images", len(indices), logger=log) if progress else None
    rel: list[torch.Tensor] = []
    back: list[torch.Tensor] = []
    pos: list[np.ndarray] = []
    with eval_mode(model):
        outputs = run_batches(
            model, loader, device=device, autocast=autocast, meter=meter,
            desc=desc if progress else None,
        )  # fmt: skip
        for out in outputs:
            if out.relaxed is None:
                continue
            rel.append(out.relaxed)  # kept on the device: one copy at the end, no sync per batch
            if features:
                back.append(out.backbone.cpu())  # d values an image: never held on the device
            pos.append(out.positions)
    net = _unwrap(model)
    k = int(net.config.get("bits", 0)) if hasattr(net, "config") else 0
    relaxed = (
        torch.cat(rel).cpu().numpy().astype(np.float32) if rel else np.zeros((0, k), np.float32)
    )
    positions = np.concatenate(pos) if pos else np.zeros(0, np.int64)
    backbone = None
    if features:
        backbone = (
            torch.cat(back).numpy().astype(np.float32) if back else np.zeros((0, 0), np.float32)
        )
    return Encoded(relaxed, backbone, positions, len(indices) - len(positions))
