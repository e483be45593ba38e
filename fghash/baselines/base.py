"""What every shallow hashing baseline shares: input checks, sign, packing, state.

A baseline learns a real-valued projection ``f: R^D -> R^bits`` from training features
and hashes by sign, ``b = sgn(f(x))`` with ``sgn(0) = +1`` (as
:func:`fghash.codes.bits.signs_to_codes`). Subclasses implement ``_fit`` and ``_project``
only; :meth:`Hasher.fit`, :meth:`Hasher.transform` and :meth:`Hasher.encode` validate
the input and do the rest.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np

from fghash.codes import check_bits, signs_to_codes
from fghash.errors import FghashError

__all__ = ["Hasher", "pca_directions", "random_rotation"]

logger = logging.getLogger(__name__)


def pca_directions(Xc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` principal directions of centred data ``Xc`` ``[N, D]``.

    Eigen-decomposition of the sample covariance ``C = Xc^T Xc / (N - 1)``; returns the
    eigenvectors ``W`` ``[D, k]`` for the ``k`` largest eigenvalues (descending) and
    those eigenvalues. Eigenvectors are only defined up to sign; each column is flipped
    so that its entry of largest magnitude is positive, which makes the result
    reproducible.
    """
    n = Xc.shape[0]
    cov = Xc.T @ Xc / max(n - 1, 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1][:k]
    W = evecs[:, order]
    peak = np.abs(W).argmax(axis=0)
    W = W * np.where(W[peak, np.arange(k)] < 0, -1.0, 1.0)
    return W, evals[order]


def random_rotation(k: int, rng: np.random.Generator) -> np.ndarray:
    """A random orthogonal ``[k, k]`` matrix: Q of the QR decomposition of a Gaussian matrix."""
    q, r = np.linalg.qr(rng.standard_normal((k, k)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


class Hasher:
    """Base class of the shallow baselines (LSH, PCAH, ITQ, SDH).

    ``fit(X, labels)`` learns from training features ``X`` float ``[N, D]``;
    ``project(X)`` gives the real values ``[N, bits]``; ``transform(X)`` their signs as
    ±1 int8; ``encode(X)`` the packed uint8 codes of schema v1. ``state_dict()`` and
    :meth:`from_state` save and restore a fitted model as plain numpy arrays.
    """

    name: ClassVar[str] = ""  # registry key, e.g. "itq"
    supervised: ClassVar[bool] = False  # needs labels to fit
    _param_names: ClassVar[tuple[str, ...]] = ("seed",)  # hyper-parameters besides bits
    _state_names: ClassVar[tuple[str, ...]] = ()  # fitted numpy arrays (attributes)

    def __init__(self, bits: int, *, seed: int = 0) -> None:
        self.bits = check_bits(bits, f"{self.name}: bits")
        self.seed = int(seed)
        self.dim_: int | None = None

    # -- public API -------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        """The hyper-parameters (JSON-able), ``bits`` included."""
        return {"bits": self.bits, **{k: getattr(self, k) for k in self._param_names}}

    @property
    def fitted(self) -> bool:
        return self.dim_ is not None

    def fit(self, X: np.ndarray, labels: np.ndarray | None = None) -> Hasher:
        """Learn the hash functions from training features ``X`` ``[N, D]`` (and labels)."""
        X = self._check_input(X, fitting=True)
        if self.supervised:
            if labels is None:
                raise FghashError(
                    f"{self.name} is supervised and needs labels for the training features; "
                    "use a features file whose database split has labels."
                )
            labels = np.asarray(labels)
            if labels.shape[0] != X.shape[0] or labels.ndim not in (1, 2):
                raise FghashError(
                    f"{self.name}: labels must be [N] or [N, C] with N={X.shape[0]}, "
                    f"got shape {list(labels.shape)}."
                )
        self.check_dim(X.shape[1])
        self.dim_ = X.shape[1]
        try:
            self._fit(X, labels)
        except BaseException:
            self.dim_ = None
            raise
        return self

    def project(self, X: np.ndarray) -> np.ndarray:
        """Real-valued projections ``[N, bits]`` (float64) whose signs are the codes."""
        X = self._check_input(X, fitting=False)
        return self._project(X)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """±1 codes as int8 ``[N, bits]`` (``sgn(0) = +1``)."""
        return np.where(self.project(X) >= 0, 1, -1).astype(np.int8)

    def encode(self, X: np.ndarray) -> np.ndarray:
        """Packed codes uint8 ``[N, ceil(bits/8)]`` in the codes file's bit order."""
        return signs_to_codes(self.project(X))

    def check_dim(self, dim: int) -> None:
        """Raise :class:`FghashError` if features of ``dim`` dimensions cannot give ``bits`` bits."""

    def fit_summary(self) -> dict[str, Any]:
        """Small JSON-able facts about the fit (written into the codes file's config)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the fitted model: method, params, numpy arrays."""
        self._require_fitted()
        arrays = {k: np.array(getattr(self, k)) for k in self._state_names}
        return {"method": self.name, "params": self.params(), "dim": self.dim_, "arrays": arrays}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Hasher:
        """Rebuild a fitted model from :meth:`state_dict`."""
        if state.get("method") != cls.name:
            raise FghashError(f"state is for method {state.get('method')!r}, not {cls.name!r}.")
        params = dict(state["params"])
        bits = params.pop("bits")
        obj = cls(bits, **params)
        missing = [k for k in cls._state_names if k not in state["arrays"]]
        if missing:
            raise FghashError(f"{cls.name} state lacks {', '.join(missing)}.")
        for k in cls._state_names:
            setattr(obj, k, np.array(state["arrays"][k]))
        obj.dim_ = int(state["dim"])
        return obj

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    # -- for subclasses ---------------------------------------------------------------

    def _fit(self, X: np.ndarray, labels: np.ndarray | None) -> None:
        raise NotImplementedError

    def _project(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise FghashError(f"{self.name}: call fit() before using the model.")

    def _check_input(self, X: np.ndarray, *, fitting: bool) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or not (
            np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)
        ):
            raise FghashError(
                f"{self.name}: features must be a float [N, D] array, got {X.dtype} {list(X.shape)}."
            )
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise FghashError(f"{self.name}: features are empty (shape {list(X.shape)}).")
        if not np.isfinite(X).all():
            raise FghashError(f"{self.name}: features contain NaN or infinite values.")
        if fitting:
            if X.shape[0] < 2:
                raise FghashError(f"{self.name}: need at least 2 training items, got {X.shape[0]}.")
        else:
            self._require_fitted()
            if X.shape[1] != self.dim_:
                raise FghashError(
                    f"{self.name}: features have {X.shape[1]} dimensions but the model was "
                    f"fitted on {self.dim_}."
                )
        return X.astype(np.float64, copy=False)
