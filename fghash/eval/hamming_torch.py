r"""Exact Hamming distances as ±1 matrix products on a torch device, and per-row counts.

The building blocks shared by the tensor search engine (:mod:`index.tensor`) and the
ranking on a device (:mod:`fghash.eval.ranking_torch`). torch is imported inside the
functions, so importing this module is free.

**Distances from one product.** With ``u, x ∈ {-1, +1}^b`` (bit 1 ↦ +1),
``d_H(u, x) = (b - u·x) / 2``. One extra column folds the offset into the product,

.. math::

    d_H(u, x) = \big[-\tfrac{u}{2},\ \tfrac12,\ 0…\big] \cdot \big[x,\ b,\ 0…\big],

and zero columns pad the inner dimension to a multiple of 8 (what tensor cores want;
they add nothing). Every term is ``±1/2`` or ``b/2``, so *every* partial sum, whatever
order or blocking the matrix product uses (split-K included), is a multiple of ``1/2``
in ``[-b/2, b]``.

* fp16 (CUDA): 10 fraction bits hold every multiple of ``1/2`` up to ``1024`` exactly,
  so for ``b ≤ 1024`` (the codes file's limit) each partial sum, even when cuBLAS
  accumulates in fp16 (``allow_fp16_reduced_precision_reduction``), and the result are
  exact: the product *is* the Hamming distance.
* float32 (CPU, where fp16 products are slow or missing): 23 fraction bits, exact up to
  ``2^22``; far beyond any code length.

**Per-row counts.** :func:`row_counts` turns a ``[rows, cols]`` tensor of small
integers into ``[rows, nbins]`` histograms — the per-distance counts both the k-NN
selection and the tie-aware metrics are built on. Two methods, identical results:
``"bincount"`` offsets each row into its own range of bins and counts everything with
one ``torch.bincount`` (one pass; atomics on the GPU); ``"compare"`` sums ``values == t``
per row for each ``t`` (``nbins`` passes, no atomics). Which is faster on a GPU is
measured by ``bench/scripts/bench_gpu_search.py``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from fghash.codes import nbytes_for
from fghash.errors import FghashError

if TYPE_CHECKING:
    import torch

__all__ = [
    "COUNT_METHODS",
    "CPU_MEMORY_BYTES",
    "torch_device",
    "device_name",
    "memory_budget",
    "operand_dtype",
    "check_packed",
    "signs",
    "database_operand",
    "query_operand",
    "row_counts",
]

logger = logging.getLogger(__name__)

COUNT_METHODS = ("bincount", "compare")
#: Working memory on the CPU when none is given (the CPU path is for correctness).
CPU_MEMORY_BYTES = 256 << 20
# Share of the free GPU memory a search or ranking may use for its blocks.
_GPU_MEMORY_SHARE = 0.5
_UNPACK_ROWS = 1 << 20


def torch_device(device: str | Any) -> torch.device:
    """``"cpu"``, ``"gpu"``/``"cuda"``, ``"cuda:N"`` or ``"auto"`` as a :class:`torch.device`
    (see :func:`fghash.util.device.resolve_device`; no usable GPU for ``gpu`` is a
    :class:`FghashError`)."""
    from fghash.util.device import resolve_device

    return resolve_device(device)


def device_name(dev: torch.device) -> str:
    """``"gpu"`` or ``"cpu"``: the vocabulary of :mod:`index`."""
    return "gpu" if dev.type == "cuda" else "cpu"


def memory_budget(dev: torch.device, memory_bytes: int | None = None) -> int:
    """Bytes of working memory for blocks: ``memory_bytes`` when given, else half the
    memory free now on a CUDA device (``torch.cuda.mem_get_info``; call it once the
    long-lived tensors are placed), else 256 MiB on CPU."""
    if memory_bytes is not None:
        if isinstance(memory_bytes, bool) or int(memory_bytes) < 1:
            raise FghashError(
                f"memory budget must be a positive number of bytes, got {memory_bytes!r}."
            )
        return int(memory_bytes)
    if dev.type == "cuda":
        import torch

        # An explicit index: torch before 2.5 refuses a device without one.
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        free, _total = torch.cuda.mem_get_info(index)
        return int(free * _GPU_MEMORY_SHARE)
    return CPU_MEMORY_BYTES


def operand_dtype(dev: torch.device) -> torch.dtype:
    """fp16 on CUDA (tensor cores), float32 elsewhere; both exact (module docstring)."""
    import torch

    return torch.float16 if dev.type == "cuda" else torch.float32


def check_packed(codes: np.ndarray, bits: int, what: str) -> np.ndarray:
    """``codes`` as C-contiguous uint8 ``[N, ceil(bits/8)]`` or a :class:`FghashError`."""
    c = np.asarray(codes)
    nb = nbytes_for(bits)
    if c.dtype != np.uint8 or c.ndim != 2 or c.shape[1] != nb:
        raise FghashError(
            f"{what} must be uint8 [N, {nb}] for {bits}-bit codes, got {c.dtype} {list(c.shape)}."
        )
    return np.ascontiguousarray(c)


def _inner_dim(bits: int) -> int:
    return -(-(bits + 1) // 8) * 8


def signs(codes: torch.Tensor, bits: int, dtype: torch.dtype) -> torch.Tensor:
    """Unpack uint8 ``[n, ceil(bits/8)]`` codes (little bit order) on their device into
    ``±1`` of ``dtype``, ``[n, bits]``."""
    import torch

    shifts = torch.arange(8, device=codes.device, dtype=torch.uint8)
    b = (codes.unsqueeze(-1) >> shifts) & 1
    return b.reshape(codes.shape[0], -1)[:, :bits].to(dtype) * 2 - 1


def _operand(
    codes: np.ndarray, bits: int, dev: torch.device, scale: float, last: float
) -> torch.Tensor:
    import torch

    dtype = operand_dtype(dev)
    n = codes.shape[0]
    out = torch.zeros((n, _inner_dim(bits)), dtype=dtype, device=dev)
    out[:, bits] = last
    for s in range(0, n, _UNPACK_ROWS):
        block = torch.from_numpy(codes[s : s + _UNPACK_ROWS]).to(dev)
        out[s : s + block.shape[0], :bits] = signs(block, bits, dtype) * scale
    return out


def database_operand(codes: np.ndarray, bits: int, dev: torch.device) -> torch.Tensor:
    """``[x, b, 0…]`` for packed database codes, ``[N, K]`` on ``dev`` (K: ``bits + 1``
    rounded up to a multiple of 8)."""
    return _operand(codes, bits, dev, 1.0, float(bits))


def query_operand(codes: np.ndarray, bits: int, dev: torch.device) -> torch.Tensor:
    """``[-u/2, 1/2, 0…]`` for packed query codes, ``[nq, K]`` on ``dev``; its product
    with :func:`database_operand`'s transpose is the exact Hamming distance matrix."""
    return _operand(codes, bits, dev, -0.5, 0.5)


def row_counts(values: torch.Tensor, nbins: int, method: str = "bincount") -> torch.Tensor:
    """Per-row histograms: ``out[i, t] = #{j : values[i, j] == t}``, int64 ``[rows, nbins]``.

    ``values`` holds integers in ``[0, nbins)`` (any integer or float dtype). Methods:
    see the module docstring.
    """
    import torch

    rows = values.shape[0]
    if method == "bincount":
        key = values.to(torch.int32)
        key += (torch.arange(rows, device=values.device, dtype=torch.int32) * nbins).unsqueeze(1)
        return torch.bincount(key.reshape(-1), minlength=rows * nbins).view(rows, nbins)
    if method == "compare":
        out = torch.empty((rows, nbins), dtype=torch.int64, device=values.device)
        for t in range(nbins):
            out[:, t] = (values == t).sum(dim=1)
        return out
    raise FghashError(f"count method must be one of {', '.join(COUNT_METHODS)}, got {method!r}.")
