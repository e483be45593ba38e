"""Training's validation mAP against averages over every tie order, worked by brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fghash.errors import FghashError
from fghash.training.validation import hamming_map


def _ap(rel_in_order: list[bool]) -> float:
    hits, total = 0, 0.0
    for pos, rel in enumerate(rel_in_order, start=1):
        if rel:
            hits += 1
            total += hits / pos
    return total / hits if hits else 0.0


def _mean_ap_over_tie_orders(dist: np.ndarray, rel: np.ndarray) -> float:
    """Average AP over every order that sorts by distance (all permutations inside ties)."""
    aps = []
    for perm in itertools.permutations(range(len(dist))):
        d = dist[list(perm)]
        if np.all(np.diff(d) >= 0):
            aps.append(_ap(list(rel[list(perm)])))
    return float(np.mean(aps))


def _signs_at(dists: list[int], bits: int) -> np.ndarray:
    """Database codes at the given Hamming distances from the all-ones query code."""
    out = np.ones((len(dists), bits), dtype=np.float32)
    for i, d in enumerate(dists):
        out[i, :d] = -1
    return out


@pytest.mark.parametrize(
    "dists,labels",
    [
        ([0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]),  # all tied: collapsed codes
        ([1, 0, 2, 1, 0, 2], [0, 1, 1, 0, 0, 1]),
        ([3, 3, 1, 1, 1, 0], [1, 0, 1, 0, 0, 0]),
        ([2, 0, 1, 3, 4, 2, 1], [1, 1, 0, 1, 0, 0, 1]),
    ],
)
def test_tie_aware_map_is_the_average_over_tie_orders(dists: list[int], labels: list[int]) -> None:
    bits = 6
    q = np.ones((1, bits), dtype=np.float32)
    db = _signs_at(dists, bits)
    expected = _mean_ap_over_tie_orders(np.array(dists), np.array(labels) == 1)
    assert hamming_map(q, np.array([1]), db, np.array(labels)) == pytest.approx(expected, abs=1e-12)


def test_collapsed_codes_score_chance_not_database_order() -> None:
    # Class-sorted database, every code equal: a stable sort puts the relevant items first.
    labels = np.repeat(np.arange(4), 2)
    codes = np.ones((8, 8), dtype=np.float32)
    stable = hamming_map(codes[:1], labels[:1], codes, labels, ties="stable")
    aware = hamming_map(codes[:1], labels[:1], codes, labels)
    assert stable == pytest.approx(1.0)
    assert aware == pytest.approx(_mean_ap_over_tie_orders(np.zeros(8), labels == 0))
    assert aware < 0.5


def test_stable_ties_and_no_relevant_items() -> None:
    q = np.ones((2, 4), dtype=np.float32)
    db = _signs_at([0, 0, 1], 4)
    # query 0 (label 5): relevant item third in a stable order -> AP 1/3; query 1 has none
    got = hamming_map(q, np.array([5, 9]), db, np.array([0, 1, 5]), ties="stable")
    assert got == pytest.approx((1 / 3 + 0.0) / 2)
    with pytest.raises(FghashError, match="ties"):
        hamming_map(q, np.array([5, 9]), db, np.array([0, 1, 5]), ties="random")
