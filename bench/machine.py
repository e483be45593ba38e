"""What a benchmark ran on: hardware and software versions, for every report.

torch's version is recorded only when something already imported torch; this module
never imports it (benchmarks of the search side must not pay for it).
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

__all__ = ["machine_info", "software_info"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores (and those this process may use), RAM, OS, GPUs seen by FAISS."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable,
        "ram_bytes": _ram_bytes(),
        "platform": platform.platform(),
        "hostname": platform.node(),
    }
    try:
        import faiss

        info["faiss_gpus"] = int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
    except Exception:  # a GPU build of FAISS without a working driver
        info["faiss_gpus"] = 0
    return info


def software_info() -> dict[str, Any]:
    """Versions of Python, numpy, h5py, FAISS, fghash (and torch only if already imported)."""
    import h5py
    import numpy

    import fghash

    out: dict[str, Any] = {
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "h5py": h5py.__version__,
        "fghash": fghash.__version__,
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
    }
    try:
        import faiss

        out["faiss"] = faiss.__version__
        out["faiss_max_threads"] = int(faiss.omp_get_max_threads())
    except ImportError:
        out["faiss"] = None
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = getattr(torch, "__version__", None)
    return out
