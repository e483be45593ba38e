"""Training checkpoints: atomic save, safe load, and the random-number-generator states.

A checkpoint is a plain dict of tensors and Python primitives saved with ``torch.save``
to a temporary file in the same folder, flushed to disk and renamed over the old one,
so a crash (or a NaN stop) never leaves a half-written ``last.pt``. Loading uses
``weights_only=True``: nothing in a checkpoint can run code.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fghash.errors import FghashError
from fghash.util.atomic import atomic_path

__all__ = ["save_checkpoint", "load_checkpoint", "capture_rng_state", "restore_rng_state"]

log = logging.getLogger(__name__)


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        out = _Recording(fh)
        try:
            torch.save(state, out)
        except RuntimeError:
            if out.error is not None:  # a full disk: torch reports only "unexpected pos"
                raise out.error from None
            raise
        fh.flush()
        os.fsync(fh.fileno())
    return path


class _Recording:
    """A file's ``write`` that remembers the :class:`OSError` it raised, which torch's
    writer turns into a ``RuntimeError`` without the cause."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.error = fh, None

    def write(self, data: Any) -> int:
        try:
            return self.fh.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.fh.flush()


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors and primitives only)."""
    path = Path(path)
    if not path.is_file():
        raise FghashError(f"{path}: no checkpoint there; train the run first (fghash train).")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for damaged files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")
        raise FghashError(
            f"{path} is not a readable fghash checkpoint (damaged, or not written by fghash: "
            f"{first[:200]})."
        ) from None


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global generators (CUDA too, if used)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        # int64, not uint32: torch < 2.6 cannot pickle uint32 tensors (restore casts back)
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back states captured by :func:`capture_rng_state`.

    The CUDA states are one per GPU visible when the checkpoint was written; a run resumed
    with fewer GPUs visible (``CUDA_VISIBLE_DEVICES``) gets the first ones back, and one
    resumed with more keeps its own on the extra GPUs.
    """
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        saved, visible = list(state["cuda"]), torch.cuda.device_count()
        if len(saved) != visible:
            log.info(
                "checkpoint holds random states of %d GPU(s), %d visible now: restoring %d",
                len(saved),
                visible,
                min(len(saved), visible),
            )
        torch.cuda.set_rng_state_all([s.cpu() for s in saved[:visible]])
