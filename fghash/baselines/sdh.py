"""Supervised discrete hashing (SDH; Shen, Shen, Liu and Shen, CVPR 2015).

Notation of the paper: ``n`` training items, ``L = bits``, ``C`` classes, codes
``B in {-1, +1}^{L x n}``, labels ``Y in {0, 1}^{C x n}`` (one-hot, or multi-hot), a
linear classifier ``W`` ``[L, C]`` on the codes, and the hash function
``F(x) = P^T phi(x)`` on RBF kernel features

    phi(x) = [exp(-||x - a_1||^2 / (2 sigma^2)), ..., exp(-||x - a_m||^2 / (2 sigma^2))]

over ``m`` anchors ``a_j`` drawn at random from the training set (``m = 1000``, or
``n`` if smaller). SDH solves

    min_{B, W, F}  ||Y - W^T B||_F^2 + lambda ||W||_F^2 + nu ||B - F(X)||_F^2
    s.t.           B in {-1, +1}^{L x n}

by alternating three steps from a random ``B``:

* **G-step** (classifier, ridge regression from codes to labels):
  ``W = (B B^T + lambda I)^{-1} B Y^T``.
* **F-step** (hash function, regression from kernel features to codes):
  ``P = (phi(X) phi(X)^T + delta I)^{-1} phi(X) B^T``; the paper writes it without
  ``delta``, a small ridge keeps it well posed when anchors are near-duplicates.
* **B-step** (codes, discrete): with ``Q = W Y + nu F(X)`` the problem is
  ``min_B ||W^T B||^2 - 2 tr(B^T Q)``. Discrete cyclic coordinate descent fixes all
  rows of ``B`` but one, the bit row ``z^T``; with ``q^T``, ``v^T`` the matching rows of
  ``Q`` and ``W`` and ``B'``, ``W'`` the rest,

      z = sgn(q - B'^T W' v),

  repeated over the ``L`` bits for a few passes (until no bit changes).

After the last B-step, ``W`` and ``P`` are refitted to the final codes. Hashing is
``h(x) = sgn(P^T (phi(x) - phi_bar))`` for database and queries alike (``phi_bar`` is
the training mean of ``phi``, i.e. a bias term). Choices not fixed by the paper:
``sigma`` = mean Euclidean distance from the training items to the anchors,
``sgn(0) = +1``. Memory: the ``[n, m]`` kernel matrix (float64, 8 n m bytes).

The code is written with items in rows (``B`` ``[n, L]``, ``Y`` ``[n, C]``), so the
formulas above appear transposed.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from fghash.baselines._registry import register_baseline
from fghash.baselines.base import Hasher
from fghash.errors import FghashError

__all__ = ["SDH", "rbf_features"]

logger = logging.getLogger(__name__)

_CHUNK = 4096  # rows of the kernel computed at a time


def _sq_dists(X: np.ndarray, A: np.ndarray) -> np.ndarray:
    d = (X * X).sum(1)[:, None] - 2.0 * X @ A.T + (A * A).sum(1)[None, :]
    return np.maximum(d, 0.0)


def rbf_features(X: np.ndarray, anchors: np.ndarray, sigma: float) -> np.ndarray:
    """``phi(x)_j = exp(-||x - a_j||^2 / (2 sigma^2))``, ``[N, m]``, in row blocks."""
    out = np.empty((X.shape[0], anchors.shape[0]))
    for s in range(0, X.shape[0], _CHUNK):
        out[s : s + _CHUNK] = np.exp(-_sq_dists(X[s : s + _CHUNK], anchors) / (2.0 * sigma**2))
    return out


def _sgn(a: np.ndarray) -> np.ndarray:
    return np.where(a >= 0, 1.0, -1.0)


@register_baseline
class SDH(Hasher):
    """Supervised discrete hashing with RBF anchor features; needs labels to fit.

    ``lam`` is lambda of the G-step, ``nu`` the weight of the hash-function term,
    ``delta`` the small ridge of the F-step, ``n_iter`` outer iterations, ``dcc_iter``
    the most passes of bit-wise coordinate descent per B-step; ``seed`` draws the
    anchors and the initial codes.
    """

    name = "sdh"
    supervised = True
    _param_names = ("n_anchors", "lam", "nu", "delta", "n_iter", "dcc_iter", "seed")
    _state_names = ("anchors_", "sigma_", "phi_mean_", "P_", "W_", "classes_", "objective_")

    def __init__(
        self,
        bits: int,
        *,
        n_anchors: int = 1000,
        lam: float = 1.0,
        nu: float = 1e-5,
        delta: float = 1e-2,
        n_iter: int = 5,
        dcc_iter: int = 5,
        seed: int = 0,
    ) -> None:
        super().__init__(bits, seed=seed)
        self.n_anchors = int(n_anchors)
        self.lam = float(lam)
        self.nu = float(nu)
        self.delta = float(delta)
        self.n_iter = int(n_iter)
        self.dcc_iter = int(dcc_iter)
        if self.n_anchors < 1 or self.n_iter < 1 or self.dcc_iter < 1:
            raise FghashError("sdh: n_anchors, n_iter and dcc_iter must be at least 1.")
        if self.lam < 0 or self.nu < 0 or self.delta < 0:
            raise FghashError("sdh: lam, nu and delta must be non-negative.")

    # -- fitting ----------------------------------------------------------------------

    def _targets(self, labels: np.ndarray) -> np.ndarray:
        """Y ``[n, C]``: one-hot of single labels (classes sorted), or multi-hot as given."""
        if labels.ndim == 1:
            self.classes_, inv = np.unique(labels, return_inverse=True)
            Y = np.zeros((labels.shape[0], self.classes_.shape[0]))
            Y[np.arange(labels.shape[0]), inv] = 1.0
            return Y
        self.classes_ = np.arange(labels.shape[1])
        return (labels != 0).astype(np.float64)

    def _fit(self, X: np.ndarray, labels: np.ndarray | None) -> None:
        assert labels is not None  # Hasher.fit checks supervised methods get labels
        Y = self._targets(labels)
        n, L = X.shape[0], self.bits
        rng = np.random.default_rng(self.seed)
        m = min(self.n_anchors, n)
        self.anchors_ = X[np.sort(rng.choice(n, size=m, replace=False))]
        self.sigma_ = np.float64(np.sqrt(_sq_dists(X, self.anchors_)).mean())
        if not self.sigma_ > 0:
            raise FghashError("sdh: all training features are identical; cannot set the RBF width.")
        phi = rbf_features(X, self.anchors_, float(self.sigma_))
        self.phi_mean_ = phi.mean(axis=0)
        phi -= self.phi_mean_
        # F-step system matrix is fixed across iterations: factor it once.
        chol = np.linalg.cholesky(phi.T @ phi + max(self.delta, 1e-10) * np.eye(m))

        def f_step(B: np.ndarray) -> np.ndarray:
            return np.linalg.solve(chol.T, np.linalg.solve(chol, phi.T @ B))

        def g_step(B: np.ndarray) -> np.ndarray:
            return np.linalg.solve(B.T @ B + self.lam * np.eye(L), B.T @ Y)

        B = _sgn(rng.standard_normal((n, L)))
        objective = []
        for it in range(self.n_iter):
            W = g_step(B)  # [L, C]
            P = f_step(B)  # [m, L]
            F = phi @ P
            B = self._b_step(B, Y @ W.T + self.nu * F, W)
            objective.append(self._objective(B, Y, W, F))
            logger.debug("sdh %d bits, iteration %d: objective %.6g", L, it + 1, objective[-1])
        self.W_ = g_step(B)
        self.P_ = f_step(B)
        self.objective_ = np.asarray(objective)
        self.train_codes_ = B.astype(np.int8)

    def _b_step(self, B: np.ndarray, Q: np.ndarray, W: np.ndarray) -> np.ndarray:
        """Discrete cyclic coordinate descent over the bits (columns of ``B`` here).

        ``B' W' v`` for bit ``l`` equals ``B G[:, l] - z G[l, l]`` with ``G = W W^T``, so a
        bit costs ``O(n L)`` instead of ``O(n L C)``.
        """
        B = B.copy()
        G = W @ W.T
        for _ in range(self.dcc_iter):
            changed = 0
            for l in range(B.shape[1]):
                z = B[:, l]
                rest = B @ G[:, l] - z * G[l, l]
                new = _sgn(Q[:, l] - rest)
                changed += int(np.count_nonzero(new != z))
                B[:, l] = new
            if changed == 0:
                break
        return B

    def _objective(self, B: np.ndarray, Y: np.ndarray, W: np.ndarray, F: np.ndarray) -> float:
        return float(
            np.square(Y - B @ W).sum()
            + self.lam * np.square(W).sum()
            + self.nu * np.square(B - F).sum()
        )

    # -- hashing ----------------------------------------------------------------------

    def _project(self, X: np.ndarray) -> np.ndarray:
        out = np.empty((X.shape[0], self.bits))
        for s in range(0, X.shape[0], _CHUNK):
            phi = rbf_features(X[s : s + _CHUNK], self.anchors_, float(self.sigma_))
            out[s : s + _CHUNK] = (phi - self.phi_mean_) @ self.P_
        return out

    def fit_summary(self) -> dict[str, Any]:
        return {
            "anchors": int(self.anchors_.shape[0]),
            "sigma": float(self.sigma_),
            "classes": int(self.classes_.shape[0]),
            "objective_final": float(self.objective_[-1]),
        }
