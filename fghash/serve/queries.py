"""Search requests' queries: hex codes, base64 of packed codes, or database ids.

Each parser returns packed codes ``uint8 [n, ceil(bits/8)]`` or raises
:class:`fghash.errors.FghashError` with one sentence naming the bad entry. Hex is read as
``fghash search --code`` reads it (:func:`fghash.codes.hex_to_code`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

import numpy as np

from fghash.codes import hex_to_code, nbytes_for
from fghash.errors import FghashError

__all__ = ["QueryError", "check_count", "parse_b64", "parse_hex"]


class QueryError(FghashError):
    """A query in a request that cannot be read (HTTP 400)."""


def check_count(n: int, max_queries: int) -> None:
    """Refuse an empty request and one with more than ``max_queries`` queries."""
    if n == 0:
        raise QueryError("the request holds no queries; give codes, codes_b64 or ids.")
    if n > max_queries:
        raise QueryError(
            f"the request holds {n} queries but this server takes at most {max_queries} per "
            "request (--max-queries); split it."
        )


def parse_hex(codes: Sequence[str], bits: int) -> np.ndarray:
    """Hex codes (byte 0 first, as ``fghash search --code``) to packed rows."""
    rows = []
    for i, text in enumerate(codes):
        try:
            rows.append(hex_to_code(text, bits))
        except FghashError as e:
            raise QueryError(f"codes[{i}]: {e}") from None
    return np.concatenate(rows).astype(np.uint8)


def parse_b64(codes: Sequence[str], bits: int) -> np.ndarray:
    """Base64 of each packed code (``ceil(bits/8)`` bytes, unused high bits 0)."""
    want = nbytes_for(bits)
    out = np.zeros((len(codes), want), dtype=np.uint8)
    for i, text in enumerate(codes):
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise QueryError(f"codes_b64[{i}] is not valid base64.") from None
        if len(raw) != want:
            raise QueryError(
                f"codes_b64[{i}] holds {len(raw)} bytes but the index holds {bits}-bit codes "
                f"({want} bytes each)."
            )
        out[i] = np.frombuffer(raw, dtype=np.uint8)
    spare = 8 * want - bits
    if spare and np.any(out[:, -1] >> (8 - spare)):
        bad = int(np.flatnonzero(out[:, -1] >> (8 - spare))[0])
        raise QueryError(
            f"codes_b64[{bad}] sets bits above the index's {bits}; the unused high bits of "
            "the last byte must be 0."
        )
    return out
