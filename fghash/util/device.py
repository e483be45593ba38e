"""Pick the torch device a command runs on (``--device auto|cpu|cuda``)."""

from __future__ import annotations

import logging
from typing import Any

from fghash.errors import FghashError

__all__ = ["resolve_device"]

log = logging.getLogger(__name__)


def resolve_device(name: str | Any = "auto") -> Any:
    """Return a :class:`torch.device` for ``"auto"``, ``"cpu"``, ``"cuda"`` (``"gpu"`` alias)
    or ``"cuda:N"``. ``auto`` takes the first GPU when torch can use one and says so."""
    import torch

    if isinstance(name, torch.device):
        return name
    text = str(name).strip().lower()
    if text == "gpu":
        text = "cuda"
    if text == "auto":
        if torch.cuda.is_available():
            dev = torch.device("cuda")
            log.info("--device auto: using the GPU %s", torch.cuda.get_device_name(dev))
            return dev
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise FghashError(
                f"--device {name} was asked for but torch sees no usable GPU; use --device cpu."
            )
        try:
            dev = torch.device(text)
        except RuntimeError:
            raise FghashError(f"--device {name!r} is not a valid CUDA device name.") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FghashError(
                f"--device {name}: only {torch.cuda.device_count()} GPU(s) are visible."
            )
        return dev
    raise FghashError(f"--device must be auto, cpu or cuda, got {name!r}.")
