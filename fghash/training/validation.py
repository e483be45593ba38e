"""Validation during training: the network's ±1 codes and their mAP by Hamming ranking.

The codes come from :func:`fghash.encoding.loop.encode_images`, the loop ``fghash encode``
and image queries run too, with the same autocast, so the codes training validates are
the codes a codes file will hold. The mAP is a thin adapter over the ranking and metric
modules (:mod:`fghash.eval.ranking`, :mod:`fghash.eval.metrics`), so training watches
exactly the number ``fghash bench`` reports.

Ties matter here: early in training many codes coincide, and breaking ties by database
position on a class-sorted database rewards collapsed codes. So the default is the
*tie-aware* AP, the exact expectation over a uniformly random order inside every Hamming
distance (derivation in :mod:`fghash.eval.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fghash.codes import signs_to_codes
from fghash.errors import FghashError
from fghash.eval.metrics import TIES, average_precision
from fghash.eval.ranking import rank_hamming

__all__ = ["NetworkCodes", "hamming_map"]


def hamming_map(
    query_signs: np.ndarray,
    query_labels: np.ndarray,
    db_signs: np.ndarray,
    db_labels: np.ndarray,
    *,
    ties: str = "tie-aware",
) -> float:
    """mAP@all of ±1 query codes against ±1 database codes (labels: same label = relevant).

    ``ties="tie-aware"`` takes the expected AP over random orders within each distance,
    ``ties="stable"`` keeps database order. A query with no relevant item scores 0 and
    still counts in the mean, as in the ADSH evaluation code.
    """
    if ties not in TIES:
        raise FghashError(f"ties must be one of {', '.join(TIES)}, got {ties!r}.")
    q = np.asarray(query_signs)
    if len(q) == 0:
        return float("nan")
    stats = rank_hamming(
        signs_to_codes(q),
        signs_to_codes(np.asarray(db_signs)),
        q.shape[1],
        np.asarray(query_labels),
        np.asarray(db_labels),
        stable=ties == "stable",
        progress=False,
    )
    return float(np.mean(average_precision(stats, None, ties)))


@dataclass
class NetworkCodes:
    """A training run's network codes ``sgn(tanh(v))`` of items of its train split."""

    model: Any  # the network (DistributedDataParallel-wrapped or not)
    ds_eval: Any  # the train split with the evaluation transform
    device: Any
    batch_size: int
    num_workers: int
    autocast: Any = None  # torch dtype, or None for float32 (as every encoder of the run)
    progress: bool = True

    def signs(self, indices: np.ndarray, desc: str) -> tuple[np.ndarray, np.ndarray]:
        """±1 codes (float32) of the readable items ``indices``, and their positions."""
        from fghash.encoding.loop import encode_images

        enc = encode_images(
            self.model,
            self.ds_eval,
            indices,
            device=self.device,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            progress=self.progress,
            desc=desc,
            autocast=self.autocast,
        )
        return np.where(enc.relaxed >= 0, 1.0, -1.0).astype(np.float32), enc.positions

    def database(self, db_idx: np.ndarray, bits: int) -> np.ndarray:
        """int8 ±1 ``[N, bits]`` codes of the database items; an unreadable one gets +1s."""
        codes = np.ones((len(db_idx), bits), dtype=np.float32)
        c, pos = self.signs(db_idx, "encoding database")
        codes[pos] = c
        return codes.astype(np.int8)

    def val_map(
        self, val_idx: np.ndarray, labels: np.ndarray, db_codes: np.ndarray, db_labels: np.ndarray
    ) -> float:
        """mAP of the held-out items ``val_idx`` (network codes) against ``db_codes``."""
        q, pos = self.signs(val_idx, "encoding val")
        return hamming_map(q, labels[val_idx][pos], db_codes, db_labels)
