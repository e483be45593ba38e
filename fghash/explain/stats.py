"""Numbers behind ``fghash explain``: bit↔attribute AUC, attribute awareness, bit statistics.

Everything here is plain numpy on arrays already read from a codes file; nothing is
plotted or written.

**AUC of a bit for an attribute.** With scores ``s`` (a bit's relaxed value, or its
sign ±1 when only codes exist) and a binary attribute ``a``,

    AUC = P(s_i > s_j) + ½ P(s_i = s_j),   i drawn from {a = 1}, j from {a = 0},

the Mann–Whitney statistic, computed from average ranks ``R`` of ``s`` (ties share
their mean rank): ``AUC = (Σ_{i: a_i=1} R_i − n₁(n₁+1)/2) / (n₁ n₀)``. AUC 0.5 means
the bit says nothing about the attribute, 1 (or 0) that its sign separates them.
An attribute value of 255 means "unknown" (items added by ``fghash add --images``); such
items are left out of that attribute's AUC (ranks are taken over the known items only),
never counted as negatives.

**Attribute-awareness score.** From the AUC matrix ``[A, K]`` (attributes × bits),

    per bit:       S_bits = mean_k max_a |AUC_{a,k} − ½|
    per attribute: S_attr = mean_a max_k |AUC_{a,k} − ½|

both in ``[0, ½]``. ½ for ``S_bits`` means every bit is a perfect detector of some
attribute (or its absence).

**Rotation null.** The same codes under a random orthogonal ``Q`` (Haar measure):
``X' = X Q`` keeps every inner product (``X' X'ᵀ = X Xᵀ``), so the retrieval
information is unchanged, but it is spread across the coordinates differently.
With only codes, ``X`` is the ±1 codes and the rotated codes are ``sgn(X Q)``. The
score of ``X'`` over many ``Q`` is what "any basis" would give; a learned basis that
aligns bits with attributes scores above it.

**Bit statistics.** Balance ``p_k`` = share of +1 in bit ``k``; the correlation matrix
``C`` of the ±1 bits (what A²-Net's decorrelation term, Eq. 8, pushes towards the
identity); effective numbers of bits:

* ``Σ_k H(p_k)``, ``H(p) = −p log₂ p − (1−p) log₂(1−p)`` (balance only);
* ``exp(−Σ_i λ̂_i ln λ̂_i)``, ``λ̂ = λ / Σλ`` the normalised eigenvalues of ``C``
  (correlation: K for uncorrelated bits, 1 when all bits are copies);
* the empirical entropy of the whole code, ``−Σ_c q_c log₂ q_c`` over distinct codes
  ``c`` (at most ``log₂ N``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fghash.codes.checks import UNKNOWN_ATTRIBUTE
from fghash.errors import FghashError

__all__ = [
    "average_ranks",
    "auc_matrix",
    "awareness",
    "Awareness",
    "random_rotation",
    "rotation_null",
    "RotationNull",
    "bit_balance",
    "bit_correlation",
    "entropy_bits",
    "effective_bits",
]


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..N of each column of ``x`` ``[N, K]``, ties given their mean rank."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        return average_ranks(x[:, None])[:, 0]
    n, k = x.shape
    ranks = np.empty((n, k), dtype=np.float64)
    for j in range(k):
        order = np.argsort(x[:, j], kind="stable")
        xs = x[order, j]
        # start of each run of equal values, and its mean rank (1-based)
        starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
        ends = np.r_[starts[1:], n]
        mean_rank = (starts + ends + 1) / 2.0
        ranks[order, j] = np.repeat(mean_rank, ends - starts)
    return ranks


def auc_matrix(scores: np.ndarray, attributes: np.ndarray) -> np.ndarray:
    """AUC of every score column for every attribute: float64 ``[A, K]``.

    ``scores`` ``[N, K]`` (relaxed values or ±1), ``attributes`` ``[N, A]`` in {0, 1}, or
    255 (unknown: that item is left out of that attribute's AUC). Attributes that every
    (known) item has, or none has, give NaN (no AUC is defined).
    """
    s = np.asarray(scores, dtype=np.float64)
    a = np.asarray(attributes)
    if s.ndim != 2 or a.ndim != 2 or s.shape[0] != a.shape[0]:
        raise FghashError(
            f"scores [N, K] and attributes [N, A] must have the same N, got {s.shape} and {a.shape}."
        )
    known = a != UNKNOWN_ATTRIBUTE
    if known.all():
        return _auc_known(s, a)
    auc = np.full((a.shape[1], s.shape[1]), np.nan)
    # one ranking per distinct set of known items (usually one: the rows added without attributes)
    patterns, which = np.unique(known.T, axis=0, return_inverse=True)
    for p, rows in enumerate(patterns):
        cols = np.flatnonzero(np.ravel(which) == p)
        if rows.any():
            auc[cols] = _auc_known(s[rows], a[np.ix_(rows, cols)])
    return auc


def _auc_known(s: np.ndarray, a: np.ndarray) -> np.ndarray:
    """:func:`auc_matrix` for float64 scores ``[N, K]`` and attributes ``[N, A]`` all known."""
    pos = (a != 0).astype(np.float64)
    n1 = pos.sum(axis=0)
    n0 = s.shape[0] - n1
    rank_sum = pos.T @ average_ranks(s)  # [A, K]
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - (n1 * (n1 + 1) / 2)[:, None]) / (n1 * n0)[:, None]
    auc[(n1 == 0) | (n0 == 0)] = np.nan
    return auc


@dataclass
class Awareness:
    """Attribute-awareness of one AUC matrix ``[A, K]``."""

    per_bit: float  # mean over bits of the best |AUC - 1/2| (0..1/2)
    per_attribute: float  # mean over attributes of the best |AUC - 1/2|
    best_attribute: np.ndarray  # int [K]: index of each bit's best-matching attribute
    best_auc: np.ndarray  # float [K]: that attribute's AUC (may be < 1/2: the bit is "not a")
    best_bit: np.ndarray  # int [A]: each attribute's best-matching bit (-1: undefined)


def awareness(auc: np.ndarray) -> Awareness:
    """``S_bits`` and ``S_attr`` (module docstring) of an AUC matrix ``[A, K]``; NaN rows skipped."""
    auc = np.asarray(auc, dtype=np.float64)
    ok = ~np.isnan(auc).all(axis=1)
    if not ok.any():
        raise FghashError("no attribute varies over these items, so no AUC is defined.")
    dev = np.abs(auc[ok] - 0.5)
    best_a = np.nanargmax(dev, axis=0)
    rows = np.flatnonzero(ok)
    best_bit = np.full(auc.shape[0], -1, dtype=np.int64)
    best_bit[ok] = np.nanargmax(dev, axis=1)
    return Awareness(
        per_bit=float(np.nanmax(dev, axis=0).mean()),
        per_attribute=float(np.nanmax(dev, axis=1).mean()),
        best_attribute=rows[best_a],
        best_auc=auc[rows[best_a], np.arange(auc.shape[1])],
        best_bit=best_bit,
    )


def random_rotation(k: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random orthogonal ``[k, k]`` matrix (QR of a Gaussian, signs fixed by R's diagonal)."""
    q, r = np.linalg.qr(rng.standard_normal((k, k)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


@dataclass
class RotationNull:
    """The awareness scores of ``rotations`` randomly rotated copies of the codes."""

    per_bit: np.ndarray  # float [R]
    per_attribute: np.ndarray  # float [R]

    def summary(self, observed: Awareness) -> dict[str, float | int]:
        """Mean, spread and the one-sided p-value ``(1 + #{null ≥ observed}) / (R + 1)``."""
        out: dict[str, float | int] = {"rotations": int(len(self.per_bit))}
        for name in ("per_bit", "per_attribute"):
            v, obs = getattr(self, name), getattr(observed, name)
            out[f"{name}_mean"] = float(v.mean())
            out[f"{name}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
            out[f"{name}_max"] = float(v.max())
            out[f"{name}_p"] = float((1 + np.sum(v >= obs)) / (len(v) + 1))
        return out


def rotation_null(
    values: np.ndarray,
    attributes: np.ndarray,
    *,
    rotations: int = 20,
    signs: bool = False,
    seed: int = 0,
) -> RotationNull:
    """Awareness of ``values @ Q`` for ``rotations`` Haar-random ``Q``.

    ``values`` ``[N, K]`` are relaxed codes, or the ±1 codes with ``signs=True`` (then the
    rotated codes are binarised again, ``sgn(X Q)``, as the observed score sees only signs).
    """
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    pb, pa = [], []
    for _ in range(int(rotations)):
        y = x @ random_rotation(x.shape[1], rng)
        if signs:
            y = np.where(y >= 0, 1.0, -1.0)
        aw = awareness(auc_matrix(y, attributes))
        pb.append(aw.per_bit)
        pa.append(aw.per_attribute)
    return RotationNull(np.asarray(pb), np.asarray(pa))


def bit_balance(signs: np.ndarray) -> np.ndarray:
    """Share of +1 in each bit of ±1 codes ``[N, K]``."""
    return (np.asarray(signs) > 0).mean(axis=0)


def bit_correlation(signs: np.ndarray) -> np.ndarray:
    """Pearson correlation ``[K, K]`` of ±1 bits; a constant bit correlates 0 with others, 1 with itself."""
    s = np.asarray(signs, dtype=np.float64)
    c = s - s.mean(axis=0)
    sd = np.sqrt((c * c).mean(axis=0))
    live = sd > 0
    corr = np.zeros((s.shape[1], s.shape[1]))
    corr[np.ix_(live, live)] = (c[:, live].T @ c[:, live]) / len(s) / np.outer(sd[live], sd[live])
    np.fill_diagonal(corr, 1.0)
    return corr


def entropy_bits(p: np.ndarray) -> np.ndarray:
    """Binary entropy ``H(p)`` in bits, elementwise, with ``H(0) = H(1) = 0``."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.nan_to_num(h)


def effective_bits(signs: np.ndarray) -> dict[str, float]:
    """The three effective numbers of bits of ±1 codes ``[N, K]`` (module docstring)."""
    s = np.asarray(signs)
    lam = np.clip(np.linalg.eigvalsh(bit_correlation(s)), 0.0, None)
    lam = lam[lam > 0] / lam.sum()
    _, counts = np.unique(s > 0, axis=0, return_counts=True)
    q = counts / counts.sum()
    return {
        "bits": int(s.shape[1]),
        "balance_entropy": float(entropy_bits(bit_balance(s)).sum()),
        "correlation_rank": float(np.exp(-(lam * np.log(lam)).sum())),
        "code_entropy": float(-(q * np.log2(q)).sum()),
        "code_entropy_cap": float(np.log2(max(len(s), 1))),
        "distinct_codes": int(len(counts)),
    }
