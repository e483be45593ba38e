"""GPU placement for binary indexes.

FAISS has exactly one binary index on GPU, ``GpuIndexBinaryFlat`` (exact Hamming
search, ``k <= 2048``). ``device="auto"`` uses it when the installed FAISS was built
with GPU support *and* a GPU is visible; every other index kind runs on CPU. Saving a
GPU index copies it back to a CPU ``IndexBinaryFlat`` first, so the file on disk is the
same whichever device built it.
"""

from __future__ import annotations

import logging
from typing import Any

from fghash.errors import FghashError

__all__ = [
    "DEVICES",
    "GPU_MAX_K",
    "gpu_available",
    "faiss_device_name",
    "resolve_faiss_device",
    "to_gpu",
    "to_cpu",
]

logger = logging.getLogger(__name__)

#: Device names FAISS placement accepts; ``cuda`` (torch's spelling) means ``gpu``.
DEVICES = ("auto", "cpu", "gpu", "cuda")
#: Largest k that GpuIndexBinaryFlat accepts.
GPU_MAX_K = 2048

_resources: Any = None


def gpu_available() -> bool:
    """True when FAISS has GPU support and at least one GPU is visible."""
    import faiss

    if not hasattr(faiss, "GpuIndexBinaryFlat"):
        return False
    try:
        return int(faiss.get_num_gpus()) > 0
    except Exception:  # a GPU build without a working driver
        return False


def faiss_device_name(device: str) -> str:
    """``device`` with torch's ``cuda`` spelled ``gpu``, so one ``--device`` serves both."""
    return "gpu" if device == "cuda" else device


def resolve_faiss_device(device: str) -> str:
    """Where a FAISS binary index runs: ``"auto" | "cpu" | "gpu" | "cuda"`` → ``"cpu"`` or
    ``"gpu"``, logging the choice (torch devices: :func:`fghash.util.device.resolve_device`).

    ``"gpu"`` without a GPU-enabled FAISS and a visible GPU raises :class:`FghashError`.
    """
    if device not in DEVICES:
        raise FghashError(f"device must be one of {', '.join(DEVICES)}, got {device!r}.")
    device = faiss_device_name(device)
    if device == "cpu":
        return "cpu"
    ok = gpu_available()
    if device == "gpu":
        if not ok:
            raise FghashError(
                "device 'gpu' was asked for but this FAISS has no GPU support or no GPU is "
                "visible; install faiss-gpu on a machine with a CUDA GPU or use --device cpu."
            )
        logger.info("using the GPU (GpuIndexBinaryFlat)")
        return "gpu"
    if ok:
        logger.info("device auto: FAISS has GPU support and a GPU is visible; using the GPU")
        return "gpu"
    logger.debug("device auto: no GPU-enabled FAISS or no visible GPU; using the CPU")
    return "cpu"


def _gpu_resources() -> Any:
    global _resources
    import faiss

    if _resources is None:
        _resources = faiss.StandardGpuResources()
    return _resources


def to_gpu(cpu_index: Any) -> Any:
    """Copy a CPU ``IndexBinaryFlat`` to GPU 0 as a ``GpuIndexBinaryFlat``."""
    import faiss

    if not isinstance(cpu_index, faiss.IndexBinaryFlat):
        raise FghashError("only the flat binary index can run on GPU.")
    return faiss.GpuIndexBinaryFlat(_gpu_resources(), cpu_index)


def to_cpu(index: Any) -> Any:
    """A CPU copy of a ``GpuIndexBinaryFlat`` (CPU indexes are returned as they are)."""
    import faiss

    if hasattr(faiss, "GpuIndexBinaryFlat") and isinstance(index, faiss.GpuIndexBinaryFlat):
        cpu = faiss.IndexBinaryFlat(index.d)
        index.copyTo(cpu)
        return cpu
    return index
