"""Zero-padding of packed binary codes to a width FAISS searches fastest.

FAISS binary indexes store ``d / 8`` bytes per code (``d`` a multiple of 8) and pick a
specialised Hamming-distance kernel by code size: 4, 8, 16, 20, 32 and 64 bytes have
hand-unrolled ``HammingComputer`` classes; any other size falls back to a generic loop
over 64-bit words plus a byte-wise tail. Appending zero bytes to *both* database and
query codes leaves every Hamming distance unchanged,

    d_H(x ‖ 0, y ‖ 0) = popcount((x ⊕ y) ‖ (0 ⊕ 0)) = popcount(x ⊕ y) = d_H(x, y),

so :func:`fast_dim` rounds a code length up to the next fast width and
:func:`pad_codes` appends the zero bytes.
"""

from __future__ import annotations

import numpy as np

from fghash.codes import check_bits, nbytes_for
from fghash.errors import FghashError

__all__ = ["FAST_CODE_BYTES", "fast_dim", "pad_codes", "check_codes"]

#: Code sizes (bytes) with a dedicated FAISS Hamming kernel.
FAST_CODE_BYTES: tuple[int, ...] = (4, 8, 16, 20, 32, 64)


def fast_dim(bits: int) -> int:
    """Width in bits that FAISS should index ``bits``-bit codes at.

    Up to 512 bits: the smallest fast code size (4, 8, 16, 20, 32, 64 bytes) that holds
    the code, so 12/16/24/32 → 32, 48/64 → 64, 96/128 → 128, 160 → 160, 256 → 256,
    512 → 512. Above 512 bits no dedicated kernel exists; FAISS's generic kernel works
    on whole 64-bit words, so the width is rounded up to a multiple of 64 bits
    (e.g. 520 → 576, 1024 → 1024), which keeps the byte-wise tail empty.
    """
    bits = check_bits(bits)
    for nbytes in FAST_CODE_BYTES:
        if bits <= nbytes * 8:
            return nbytes * 8
    return -(-bits // 64) * 64


def check_codes(codes: np.ndarray, bits: int, what: str = "codes") -> np.ndarray:
    """Return ``codes`` as a C-contiguous uint8 ``[N, ceil(bits/8)]`` array or raise.

    A single code ``[ceil(bits/8)]`` becomes one row. Unused high bits of the last byte
    must be 0 (otherwise Hamming distances would count bits beyond ``bits``).
    """
    c = np.asarray(codes)
    nb = nbytes_for(bits)
    if c.ndim == 1 and c.shape[0] == nb:
        c = c.reshape(1, nb)
    if c.dtype != np.uint8 or c.ndim != 2 or c.shape[1] != nb:
        raise FghashError(
            f"{what} must be uint8 [N, {nb}] for {bits}-bit codes, got {c.dtype} {list(c.shape)}."
        )
    spare = nb * 8 - bits
    if spare and c.shape[0] and np.any(c[:, -1] >> np.uint8(8 - spare)):
        raise FghashError(
            f"{what} set bits above bit {bits - 1}; unused high bits of the last byte must be 0."
        )
    return np.ascontiguousarray(c)


def pad_codes(codes: np.ndarray, bits: int, dim: int) -> np.ndarray:
    """Append zero bytes so ``[N, ceil(bits/8)]`` codes become ``[N, dim // 8]``.

    ``dim`` must be a multiple of 8 and at least ``8 * ceil(bits/8)``. Hamming distances
    between padded codes equal those between the originals (see the module docstring).
    Returns the input itself (no copy) when no padding is needed.
    """
    c = check_codes(codes, bits)
    if dim % 8 or dim < c.shape[1] * 8:
        raise FghashError(
            f"padded width must be a multiple of 8 of at least {c.shape[1] * 8} bits, got {dim}."
        )
    extra = dim // 8 - c.shape[1]
    if extra == 0:
        return c
    out = np.zeros((c.shape[0], dim // 8), dtype=np.uint8)
    out[:, : c.shape[1]] = c
    return out
