"""Bit helpers: the code length's range, packing, signs ↔ codes and hex.

Bit order: bit ``i`` of an item is ``(codes[:, i >> 3] >> (i & 7)) & 1``, which is
``numpy.packbits(..., bitorder="little")`` and the order FAISS binary indexes read. Bit
value 1 means sign +1. Unused high bits of the last byte are 0.

:data:`MAX_BITS` and :func:`check_bits` are the one place the range of a code length is
decided; :func:`parse_bits` is the one parser of a ``--bits`` list.

This module imports numpy only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from fghash.errors import FghashError

__all__ = [
    "MAX_BITS",
    "nbytes_for",
    "check_bits",
    "parse_bits",
    "check_padding_zero",
    "pack_bits",
    "unpack_bits",
    "signs_to_codes",
    "codes_to_signs",
    "hex_to_code",
    "code_to_hex",
]

MAX_BITS = 1024


def nbytes_for(bits: int) -> int:
    """Bytes per packed code: ``ceil(bits / 8)``."""
    return (int(bits) + 7) // 8


def check_bits(bits: Any, name: str = "bits") -> int:
    """``bits`` as an int if it is a whole number from 1 to :data:`MAX_BITS`, else raise
    :class:`FghashError` starting with ``name`` (``"bits"``, ``"--bits"``, ``"itq: bits"``)."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise FghashError(f"{name} must be an integer from 1 to {MAX_BITS}, got {bits!r}.")
    if not 1 <= int(bits) <= MAX_BITS:
        raise FghashError(f"{name} must be from 1 to {MAX_BITS}, got {bits}.")
    return int(bits)


def parse_bits(bits: int | str | Iterable[int | str]) -> list[int]:
    """Code lengths from ``32``, ``"12,24, 32"`` or ``[12, 24]``: distinct integers in
    1..:data:`MAX_BITS`, in the order given.

    A length given twice is refused (it would train or fit the same thing twice, and
    both outputs would claim one file name).
    """
    if isinstance(bits, (int, np.integer)) and not isinstance(bits, bool):
        items: list[Any] = [bits]
    elif isinstance(bits, str):
        items = [t for t in bits.replace(" ", "").split(",") if t]  # "12,24," is fine
    else:
        items = list(bits)
    out: list[int] = []
    for t in items:
        try:
            if isinstance(t, bool) or (isinstance(t, float) and not t.is_integer()):
                raise ValueError
            b = int(t)
        except (TypeError, ValueError):
            raise FghashError(
                "--bits must be a comma-separated list of integers such as 12,24,32,48, "
                f"got {bits!r}."
            ) from None
        check_bits(b, "--bits values")
        if b in out:
            raise FghashError(f"--bits lists {b} twice; give each code length once.")
        out.append(b)
    if not out:
        raise FghashError("--bits needs at least one code length, such as 32.")
    return out


def check_padding_zero(codes: np.ndarray, bits: int, where: str) -> None:
    """Raise unless every unused high bit of the last byte of ``codes`` is 0."""
    spare = nbytes_for(bits) * 8 - bits
    if spare and codes.shape[0]:
        mask = np.uint8((0xFF << (8 - spare)) & 0xFF)
        if np.any(codes[:, -1] & mask):
            raise FghashError(
                f"{where} sets bits above bit {bits - 1}; unused high bits must be 0."
            )


def pack_bits(bits01: np.ndarray) -> np.ndarray:
    """Pack a {0,1} array ``[N, bits]`` into uint8 ``[N, ceil(bits/8)]``, little bit order.

    Any non-zero entry counts as 1. Unused high bits of the last byte are 0.
    """
    a = np.asarray(bits01)
    if a.ndim != 2:
        raise FghashError(f"pack_bits expects a 2-d [N, bits] array, got shape {a.shape}.")
    return np.packbits(a != 0, axis=1, bitorder="little")


def unpack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unpack uint8 ``[N, ceil(bits/8)]`` into a {0,1} uint8 array ``[N, bits]``."""
    bits = check_bits(bits)
    c = np.asarray(codes)
    if c.dtype != np.uint8 or c.ndim != 2 or c.shape[1] != nbytes_for(bits):
        raise FghashError(
            f"packed codes for {bits} bits must be uint8 [N, {nbytes_for(bits)}], "
            f"got {c.dtype} {c.shape}."
        )
    return np.unpackbits(c, axis=1, count=bits, bitorder="little")


def signs_to_codes(x: np.ndarray) -> np.ndarray:
    """Binarise real values ``[N, bits]`` by sign and pack them: ``x >= 0`` gives bit 1 (+1).

    ``sgn(0)`` is taken as +1 so every real vector has exactly one code.
    """
    a = np.asarray(x)
    if a.ndim != 2:
        raise FghashError(f"signs_to_codes expects a 2-d [N, bits] array, got {a.shape}.")
    if np.issubdtype(a.dtype, np.floating) and np.isnan(a).any():
        raise FghashError("cannot binarise values that contain NaN.")
    return pack_bits(a >= 0)


def codes_to_signs(codes: np.ndarray, bits: int, dtype: Any = np.float32) -> np.ndarray:
    """Unpack codes to a ±1 array ``[N, bits]`` (bit 1 → +1, bit 0 → -1)."""
    u = unpack_bits(codes, bits).astype(dtype)
    return u * 2 - 1


def code_to_hex(code: np.ndarray) -> str:
    """One packed code (uint8 ``[nbytes]``) as hex, byte 0 first (bits 0..7 of the code)."""
    return bytes(np.asarray(code, dtype=np.uint8).ravel()).hex()


def hex_to_code(text: str, bits: int) -> np.ndarray:
    """Parse a hex string (byte 0 first, as :func:`code_to_hex` writes) into uint8 ``[1, nbytes]``.

    A leading ``0x`` (as many tools print hex) is accepted and dropped, as are spaces and
    underscores. The hex must hold exactly ``ceil(bits/8)`` bytes (two digits each) and
    leave the unused high bits at 0.
    """
    bits = check_bits(bits)
    t = text.strip().lower().replace(" ", "").replace("_", "")
    if t.startswith("0x"):
        t = t[2:]
    want = nbytes_for(bits)
    if not t or any(c not in "0123456789abcdef" for c in t):
        raise FghashError(
            f"code {text!r} is not a hexadecimal string (digits 0-9 and a-f, byte 0 first)."
        )
    if len(t) % 2:
        raise FghashError(
            f"code {text!r} has an odd number of hex digits ({len(t)}); each byte takes two, "
            f"so {bits}-bit codes take {2 * want}."
        )
    raw = bytes.fromhex(t)
    if len(raw) != want:
        raise FghashError(
            f"code {text!r} has {len(raw)} bytes but the index holds {bits}-bit codes "
            f"({want} bytes, {2 * want} hex digits)."
        )
    arr = np.frombuffer(raw, dtype=np.uint8).reshape(1, want).copy()
    check_padding_zero(arr, bits, f"code {text!r}")
    return arr
