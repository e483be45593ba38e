"""Small random codes files for the tests of writers, readers and crashes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fghash.codes import CodesFile, Split, pack_bits, write_codes

__all__ = ["random_split", "write_splits"]


def random_split(n: int, first_id: int, seed: int, bits: int) -> Split:
    """``n`` random ``bits``-bit codes with ids ``first_id..``, 5 classes and paths."""
    rng = np.random.default_rng(seed)
    return Split(
        codes=pack_bits(rng.integers(0, 2, size=(n, bits)).astype(bool)),
        ids=np.arange(first_id, first_id + n, dtype=np.int64),
        labels=rng.integers(0, 5, size=n),
        paths=[f"img/{first_id + i}.jpg" for i in range(n)],
    )


def write_splits(path: Path, bits: int, database: Split, query: Split | None = None) -> None:
    """A codes file (method ``itq``) holding ``database`` and, if given, ``query``."""
    splits = {"database": database} | ({"query": query} if query is not None else {})
    write_codes(path, CodesFile(bits=bits, splits=splits, method="itq"))
