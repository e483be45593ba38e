"""Locality-sensitive hashing with random hyperplanes (Charikar, STOC 2002).

Sign-random-projection LSH: with ``w_k ~ N(0, I_D)`` drawn independently,

    h_k(x) = sgn(w_k^T (x - mu)),   k = 1..bits,

where ``mu`` is the training mean (centring makes the hyperplanes pass through the
data instead of cutting it off to one side). For two vectors at angle ``theta``,
``P[h_k(x) != h_k(y)] = theta / pi``, so Hamming distance estimates the angle.
Data-independent apart from ``mu``; deterministic for a given ``seed``.
"""

from __future__ import annotations

import numpy as np

from fghash.baselines._registry import register_baseline
from fghash.baselines.base import Hasher

__all__ = ["LSH"]


@register_baseline
class LSH(Hasher):
    """Random Gaussian hyperplanes through the training mean; ``seed`` fixes them."""

    name = "lsh"
    _state_names = ("mean_", "planes_")

    def _fit(self, X: np.ndarray, labels: np.ndarray | None) -> None:
        rng = np.random.default_rng(self.seed)
        self.mean_ = X.mean(axis=0)
        self.planes_ = rng.standard_normal((X.shape[1], self.bits))  # [D, bits], columns w_k

    def _project(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) @ self.planes_
