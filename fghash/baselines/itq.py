"""Iterative quantization (ITQ; Gong, Lazebnik, Gordo and Perronnin, PAMI 2013).

1. Centre the training features and project them on the top-``c`` principal directions
   (``c = bits``): ``V = (X - mu) W_pca``, ``V`` ``[N, c]`` (as PCAH).
2. Find the orthogonal rotation ``R`` ``[c, c]`` and the codes ``B in {-1, +1}^{N x c}``
   that minimise the paper's quantization loss

       Q(B, R) = || B - V R ||_F^2 .

   Alternate, starting from a random orthogonal ``R_0``:

   * fix ``R``, update ``B``: ``Q`` is minimised entry by entry, ``B = sgn(V R)``;
   * fix ``B``, update ``R``: an orthogonal Procrustes problem. With the SVD
     ``B^T V = S_hat Omega S^T`` (equivalently ``V^T B = S Omega S_hat^T``),
     ``R = S S_hat^T`` maximises ``tr(B^T V R)`` and so minimises ``Q``.

   Each half-step can only lower ``Q``, so the loss never increases.
3. Hash: ``h(x) = sgn(R^T W_pca^T (x - mu))``.

:attr:`ITQ.losses_` records ``Q(sgn(V R_t), R_t)`` for ``t = 0..n_iter`` (entry 0 is
the random start), i.e. the loss of the best codes for each rotation; with
``B_t = sgn(V R_{t-1})`` it satisfies
``Q(sgn(V R_t), R_t) <= Q(B_t, R_t) <= Q(B_t, R_{t-1}) = Q(sgn(V R_{t-1}), R_{t-1})``.
With ``record_rotations=True`` every ``R_t`` is kept in :attr:`ITQ.rotations_`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from fghash.baselines._registry import register_baseline
from fghash.baselines.base import Hasher, pca_directions, random_rotation
from fghash.baselines.pcah import check_pca_bits
from fghash.errors import FghashError

__all__ = ["ITQ", "quantization_loss"]

logger = logging.getLogger(__name__)


def quantization_loss(B: np.ndarray, V: np.ndarray, R: np.ndarray) -> float:
    """``Q(B, R) = ||B - V R||_F^2``."""
    return float(np.square(B - V @ R).sum())


def _sgn(a: np.ndarray) -> np.ndarray:
    return np.where(a >= 0, 1.0, -1.0)


@register_baseline
class ITQ(Hasher):
    """PCA to ``bits`` dimensions, then a learned rotation minimising quantization loss.

    ``n_iter`` alternations (50 in the paper); ``seed`` fixes the random start ``R_0``.
    """

    name = "itq"
    _param_names = ("n_iter", "seed")
    _state_names = ("mean_", "components_", "rotation_", "losses_")

    def __init__(
        self, bits: int, *, n_iter: int = 50, seed: int = 0, record_rotations: bool = False
    ) -> None:
        super().__init__(bits, seed=seed)
        self.n_iter = int(n_iter)
        if self.n_iter < 0:
            raise FghashError(f"itq: n_iter must be >= 0, got {n_iter}.")
        self.record_rotations = bool(record_rotations)

    def check_dim(self, dim: int) -> None:
        check_pca_bits(self.name, self.bits, dim)

    def _fit(self, X: np.ndarray, labels: np.ndarray | None) -> None:
        self.mean_ = X.mean(axis=0)
        Xc = X - self.mean_
        self.components_, _ = pca_directions(Xc, self.bits)
        V = Xc @ self.components_
        R = random_rotation(self.bits, np.random.default_rng(self.seed))
        losses = [quantization_loss(_sgn(V @ R), V, R)]
        rotations = [R] if self.record_rotations else []
        for _ in range(self.n_iter):
            B = _sgn(V @ R)
            s_hat, _, s_t = np.linalg.svd(B.T @ V)  # B^T V = S_hat Omega S^T
            R = s_t.T @ s_hat.T  # R = S S_hat^T
            losses.append(quantization_loss(_sgn(V @ R), V, R))
            if self.record_rotations:
                rotations.append(R)
        self.rotation_ = R
        self.losses_ = np.asarray(losses)
        self.rotations_ = rotations
        logger.debug(
            "itq %d bits: quantization loss %.4g -> %.4g", self.bits, losses[0], losses[-1]
        )

    def _project(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) @ self.components_ @ self.rotation_

    def fit_summary(self) -> dict[str, Any]:
        return {
            "quantization_loss_start": float(self.losses_[0]),
            "quantization_loss_final": float(self.losses_[-1]),
            "iterations": int(len(self.losses_) - 1),
        }
