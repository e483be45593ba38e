"""mAP by Hamming ranking for validation during training: ±1 codes in, one number out.

A thin adapter over the ranking and metric modules (:mod:`fghash.eval.ranking`, :mod:`fghash.eval.metrics`,
NumPy only), so training watches exactly the number ``fghash bench`` reports.

Ties matter here: early in training many codes coincide, and breaking ties by database
position on a class-sorted database rewards collapsed codes. So the default is the
*tie-aware* AP, the exact expectation over a uniformly random order inside every Hamming
distance (derivation in :mod:`fghash.eval.metrics`).
"""

from __future__ import annotations

import numpy as np

from fghash.codes import signs_to_codes
from fghash.errors import FghashError
from fghash.eval.metrics import TIES, average_precision
from fghash.eval.ranking import rank_hamming

__all__ = ["hamming_map"]


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
