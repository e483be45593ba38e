"""Run a trained hashing network over images: the one loop behind every encoder.

Training validation (:mod:`fghash.training.loop`), ``fghash encode``
(:func:`fghash.encoding.encode.encode_run`), image queries and ``fghash add --images``
(:class:`fghash.encoding.encode.HashEncoder`) all pass their batches through
:func:`run_batches`, so the same images and run give the same codes whichever path
encodes them. The choices are made here once: eval mode without the image decoders (the
model's ``embed``), no autograd, autocast as the run trained (:func:`eval_autocast`: the
config's ``amp``, CUDA only), and on CUDA the input pipeline that keeps the GPU busy:
pinned host batches copied without blocking, channels-last tensors, outputs copied back
into pinned host buffers without blocking (:class:`HostCopies`, one wait per chunk, not
one per batch), and DataLoader workers from the CPU count (:func:`default_num_workers`).

Shared by training and encoding, which must not import each other.
"""

from __future__ import annotations

import inspect
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
    "HostCopies",
    "PROGRESS_EVERY_S",
    "amp_dtype",
    "default_num_workers",
    "embed",
    "encode_images",
    "eval_autocast",
    "eval_mode",
    "image_loader",
    "loader_options",
    "native_bf16",
    "prepare_model",
    "run_batches",
    "to_host",
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


def native_bf16(device: torch.device) -> bool:
    """Whether the GPU ``device`` computes bfloat16 natively (compute capability ≥ 8.0).

    Since torch 2.3 ``torch.cuda.is_bf16_supported()`` also says yes for emulated
    bfloat16 (V100, T4), which is far slower than float16 with a GradScaler; its
    ``including_emulation=False`` asks the right question where it exists.
    """
    fn = torch.cuda.is_bf16_supported
    if "including_emulation" in inspect.signature(fn).parameters:
        where = torch.cuda.device(device.index) if device.index is not None else nullcontext()
        with where:
            return bool(fn(including_emulation=False))
    return tuple(torch.cuda.get_device_capability(device)) >= (8, 0)


def amp_dtype(cfg: Any, device: torch.device) -> torch.dtype:
    """The autocast dtype a config names (``cfg.amp_dtype``); float16 on a GPU without
    native bfloat16 (:func:`native_bf16`). Training adds a GradScaler for float16."""
    if cfg.amp_dtype == "bfloat16" and device.type == "cuda" and not native_bf16(device):
        log.info("this GPU has no native bfloat16; mixed precision uses float16")
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


def default_num_workers(device_type: str, cores: int | None = None) -> int:
    """DataLoader workers decoding and transforming images for a network on
    ``device_type``, from the ``cores`` this process may use (default: all of them).

    On CUDA decoding is what limits the rate (a GPU runs a ResNet far faster than one
    core decodes JPEGs), so every core but the one feeding the GPU decodes. On the CPU
    the network needs the cores itself: at most 4 workers.
    """
    if cores is None:
        from fghash.util.threads import usable_cores

        cores = usable_cores()
    if device_type == "cuda":
        return max(1, cores - 1)
    return min(4, cores)


def loader_options(device: torch.device, num_workers: int) -> dict[str, Any]:
    """DataLoader options for batches bound to ``device``: on CUDA pinned host pages, so
    that :func:`run_batches`' ``non_blocking`` copy overlaps the previous batch."""
    return {"num_workers": num_workers, "pin_memory": device.type == "cuda"}


def image_loader(
    ds: Any,
    indices: Sequence[int] | np.ndarray,
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device,
) -> DataLoader:
    """Batches ``(images, labels, positions)`` of items ``indices`` of ``ds`` in order,
    unreadable items dropped (a batch of none is ``None``); :func:`loader_options`."""
    from fghash.data import collate_skip_none

    return DataLoader(
        PositionDataset(ds, indices),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate_skip_none,
        **loader_options(device, num_workers),
    )


def to_host(t: torch.Tensor) -> torch.Tensor:
    """``t`` on the host without waiting for the device: from CUDA a ``non_blocking``
    copy into pinned memory, readable once the stream is synchronised
    (:class:`HostCopies` does that); a host tensor is returned as it is."""
    if t.device.type != "cuda":
        return t
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    return out.copy_(t, non_blocking=True)


class HostCopies:
    """Device outputs gathered on the host: each batch's copy is started as it comes
    (:func:`to_host`) and all are waited for once, in :meth:`numpy`, so the host never
    stalls the GPU between batches; pinned buffers come from torch's caching host
    allocator, so a chunk's worth is reused chunk after chunk."""

    def __init__(self) -> None:
        self.parts: list[torch.Tensor] = []
        self._cuda: torch.device | None = None

    def add(self, t: torch.Tensor) -> None:
        if t.device.type == "cuda":
            self._cuda = t.device
        self.parts.append(to_host(t))

    def numpy(self, empty: np.ndarray) -> np.ndarray:
        """The rows gathered so far as one float32 array (``empty`` when none)."""
        if not self.parts:
            return empty
        if self._cuda is not None:
            torch.cuda.current_stream(self._cuda).synchronize()
        return torch.cat(self.parts).numpy().astype(np.float32, copy=False)


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
    rel, back = HostCopies(), HostCopies()
    pos: list[np.ndarray] = []
    with eval_mode(model):
        outputs = run_batches(
            model, loader, device=device, autocast=autocast, meter=meter,
            desc=desc if progress else None,
        )  # fmt: skip
        for out in outputs:
            if out.relaxed is None:
                continue
            rel.add(out.relaxed)
            if features:
                back.add(out.backbone)
            pos.append(out.positions)
    net = _unwrap(model)
    k = int(net.config.get("bits", 0)) if hasattr(net, "config") else 0
    relaxed = rel.numpy(np.zeros((0, k), np.float32))
    positions = np.concatenate(pos) if pos else np.zeros(0, np.int64)
    backbone = back.numpy(np.zeros((0, 0), np.float32)) if features else None
    return Encoded(relaxed, backbone, positions, len(indices) - len(positions))
