"""Section ``versions``: the software and the GPU the other sections ran on."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["check"]


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def check(tiny: bool, device: str) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "packages": {
            n: _version(n)
            for n in (
                "torchvision",
                "numpy",
                "h5py",
                "click",
                "pillow",
                "scipy",
                "faiss-cpu",
                "faiss-gpu",
            )
        },
    }
    try:
        import faiss

        out["faiss"] = faiss.__version__
        out["faiss_gpus"] = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    except ImportError:
        out["faiss"] = None
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda but torch sees no GPU")
        props = torch.cuda.get_device_properties(0)
        out["gpu"] = {
            "name": props.name,
            "count": torch.cuda.device_count(),
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
    else:
        out["gpu"] = None
    return out
