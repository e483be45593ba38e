"""PCA hashing (PCAH; e.g. Wang, Kumar and Chang, "Semi-supervised hashing", PAMI 2012).

With ``W`` ``[D, bits]`` the eigenvectors of the training covariance
``C = (X - mu)^T (X - mu) / (N - 1)`` for its ``bits`` largest eigenvalues,

    h(x) = sgn(W^T (x - mu)).

Needs ``bits <= D``. The sign of each eigenvector is fixed so that its largest-magnitude
entry is positive (see :func:`fghash.baselines.base.pca_directions`).
"""

from __future__ import annotations

import numpy as np

from fghash.baselines._registry import register_baseline
from fghash.baselines.base import Hasher, pca_directions
from fghash.errors import FghashError

__all__ = ["PCAH", "check_pca_bits"]


def check_pca_bits(name: str, bits: int, dim: int) -> None:
    """PCA-based codes take one principal direction per bit, so ``bits <= D``."""
    if bits > dim:
        raise FghashError(
            f"{name} with {bits} bits needs features of at least {bits} dimensions but they have "
            f"{dim}; choose fewer bits or use lsh/sdh."
        )


@register_baseline
class PCAH(Hasher):
    """Sign of the projection on the top-``bits`` principal directions (``seed`` unused)."""

    name = "pcah"
    _state_names = ("mean_", "components_", "explained_variance_")

    def check_dim(self, dim: int) -> None:
        check_pca_bits(self.name, self.bits, dim)

    def _fit(self, X: np.ndarray, labels: np.ndarray | None) -> None:
        self.mean_ = X.mean(axis=0)
        self.components_, self.explained_variance_ = pca_directions(X - self.mean_, self.bits)

    def _project(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) @ self.components_
