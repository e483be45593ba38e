"""ADSH: pairwise similarity and the discrete update of the database codes.

Jiang & Li, "Asymmetric Deep Supervised Hashing", AAAI 2018. ADSH (and A²-Net, which
trains with it) learns a network ``F`` for queries and the database codes ``B`` directly.
With ``Ω`` the ``n`` sampled database items, ``U = tanh(F(I_Ω)) ∈ R^{n×k}``,
``B ∈ {-1,+1}^{N×k}`` and target similarities ``S̃ ∈ R^{n×N}`` the objective is

    J(B) = Σ_{i∈Ω, j∈Γ} (u_iᵀ b_j − k S̃_ij)²  +  γ Σ_{i∈Ω} ‖b_{ω_i} − u_i‖².

With ``U`` fixed, ``B`` is updated one bit (column) at a time. Writing ``B̂``/``Û`` for ``B``/``U``
without column ``b`` and ``Ū ∈ R^{N×k}`` for ``U`` scattered to the rows ``Ω`` (zero
elsewhere), only ``2 B_{*b}ᵀ (B̂ Ûᵀ U_{*b} − k S̃ᵀ U_{*b} − γ Ū_{*b})`` depends on column ``b``
(``‖B_{*b}‖² = N`` is constant), so the exact minimiser over ``{-1,+1}^N`` is

    B_{*b} = sgn(Q_{*b} − B̂ Ûᵀ U_{*b}),   Q = k S̃ᵀ U + γ Ū,

ADSH's closed-form bit update (sec. "Learning Process", update of ``V``).

Similarities: ``similarity_matrix`` gives ``S ∈ {0,1}`` (single labels: equal; multi-hot:
at least one shared label). ADSH uses ``S̃ = 2S − 1 ∈ {−1,+1}``. The A²-Net/SEMICON
reference code optionally uses a "soft" target (``soft=True``) that rescales the
dissimilar entries to ``−P/D`` (``P``/``D`` = number of similar/dissimilar pairs in the
matrix), which balances the rare positives of fine-grained data sets.

Everything here is torch (CPU or GPU); numpy inputs are converted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from fghash.errors import FghashError

__all__ = [
    "similarity_matrix",
    "similarity_targets",
    "init_database_codes",
    "class_codes",
    "adsh_objective",
    "update_database_codes",
]


def _as_tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    try:
        return torch.as_tensor(np.asarray(x))
    except Exception as e:  # numpy raises several types for ragged/object input
        raise FghashError(f"{name} must be an array of labels, got {type(x).__name__}.") from e


def similarity_matrix(labels_q: Any, labels_db: Any) -> Tensor:
    """Pairwise similarity ``S ∈ {0,1}^{nq×ndb}`` (float32) between two label sets.

    Labels are either integer class ids ``[n]`` (similar = same class) or multi-hot
    ``[n, C]`` (similar = at least one shared label). Both sides must use the same kind.
    """
    q = _as_tensor(labels_q, "labels_q")
    d = _as_tensor(labels_db, "labels_db").to(q.device)
    if q.ndim != d.ndim or q.ndim not in (1, 2):
        raise FghashError(
            f"labels must both be class ids [n] or both multi-hot [n, C], got shapes {tuple(q.shape)} and {tuple(d.shape)}."
        )
    if q.ndim == 1:
        return (q[:, None] == d[None, :]).float()
    if q.shape[1] != d.shape[1]:
        raise FghashError(
            f"multi-hot labels disagree on the number of classes: {q.shape[1]} and {d.shape[1]}."
        )
    return ((q.float() @ d.float().T) > 0).float()


def similarity_targets(S: Tensor, soft: bool = False, check: bool = True) -> Tensor:
    """ADSH targets from ``S ∈ {0,1}``: ``2S − 1``, or with ``soft`` similar → 1, dissimilar → −P/D.

    ``check=False`` skips the 0/1 check (a device→host synchronisation); nothing else
    here waits for the device.
    """
    if check and not torch.all((S == 0) | (S == 1)):
        raise FghashError("the similarity matrix S must hold only 0 and 1 (use similarity_matrix).")
    s = S if S.is_floating_point() else S.float()
    if not soft:
        return 2 * s - 1
    pos = s.sum()
    neg = s.numel() - pos  # no dissimilar pair: the ratio is never used
    return torch.where(s > 0, 1.0, -(pos / neg.clamp(min=1))).to(s.dtype)


def init_database_codes(
    num_database: int,
    bits: int,
    seed: int,
    device: Any = None,
    labels: Any = None,
) -> Tensor:
    """±1 database codes ``[N, k]`` (float32) that ADSH's alternation starts from.

    Without ``labels``: independent random bits, as in ADSH. With ``labels`` (class ids
    ``[N]`` or multi-hot ``[N, C]``): every class gets one code of :func:`class_codes`
    and each item takes its class's code (multi-hot: the sign of the sum of its classes'
    codes). Why: the network's first epochs are fitted to ``Σ_j S̃_ij b_j``; with random
    B that is a sum of ~N/C random signs per bit, small and uncorrelated between the items
    of a class, so the best class-blind answer ``u = 0`` wins and training sits on that
    plateau until chance lines the network up with the classes. With class-consistent
    codes the target is ``N/C`` times a class code from the first step. The first
    discrete update makes B class-consistent anyway (its ``k S̃ᵀU`` term is the same for
    every item of a class), but from ``U ≈ 0`` it draws each class's new code from noise;
    a trainer can keep these codes for the first outer iterations instead
    (``TrainConfig.hold_codes``), so that the network has fixed targets while it learns
    to tell the classes apart. ADSH (and the paper protocols) start from random bits.

    Drawn by NumPy from ``seed`` alone (:func:`fghash.training.sampling.derived_seed`), so
    a run starts from the same B on every device and torch version.
    """
    from fghash.training.sampling import derived_seed

    if labels is not None:
        return _codes_by_class(num_database, bits, seed, labels).to(device)
    rng = np.random.default_rng(derived_seed(seed, 0xB))
    B = np.where(rng.standard_normal((num_database, bits)) >= 0, 1.0, -1.0).astype(np.float32)
    return torch.from_numpy(B).to(device)


def class_codes(num_classes: int, bits: int, seed: int) -> np.ndarray:
    """One ±1 code per class ``[C, k]`` (float32): rows and columns of a Hadamard matrix.

    With ``m`` the smallest power of two ``≥ max(C, k + 1)``, the codes are ``C`` random
    rows of the Sylvester–Hadamard matrix ``H_m`` restricted to ``k`` random columns other
    than the constant first one. The rows of ``H_m`` are orthogonal (any two differ in
    ``m/2`` places) and each non-constant column holds as many +1 as −1, so with ``C = m``
    every bit is balanced and on average two classes differ in half their bits; random
    draws would sometimes give two classes the same or nearly the same code.
    """
    from fghash.training.sampling import derived_seed

    if num_classes < 1:
        raise FghashError(f"class codes need at least one class, got {num_classes}.")
    m = 1
    while m < max(num_classes, bits + 1):
        m *= 2
    H = np.ones((1, 1), dtype=np.float32)
    while H.shape[0] < m:
        H = np.block([[H, H], [H, -H]])
    rng = np.random.default_rng(derived_seed(seed, 0xC1A55))
    rows = rng.permutation(m)[:num_classes]
    cols = 1 + rng.permutation(m - 1)[:bits]
    return H[np.ix_(rows, cols)].astype(np.float32)


def _codes_by_class(num_database: int, bits: int, seed: int, labels: Any) -> Tensor:
    y = _as_tensor(labels, "labels").cpu().numpy()
    if y.shape[0] != num_database or y.ndim not in (1, 2):
        raise FghashError(
            f"labels must be [{num_database}] class ids or [{num_database}, C] multi-hot, "
            f"got shape {tuple(y.shape)}."
        )
    if y.ndim == 1:
        y = y.astype(np.int64)
        if num_database and y.min() < 0:
            raise FghashError("class ids must not be negative.")
        codes = class_codes(int(y.max(initial=-1)) + 1 or 1, bits, seed)
        return torch.from_numpy(codes[y])
    codes = class_codes(y.shape[1], bits, seed)
    B = np.where(y.astype(np.float32) @ codes >= 0, 1.0, -1.0).astype(np.float32)
    return torch.from_numpy(B)


def _check(B: Tensor, U: Tensor, S: Tensor, omega: Tensor, bits: int) -> Tensor:
    if B.ndim != 2 or B.shape[1] != bits:
        raise FghashError(f"database codes B must be [N, {bits}], got {tuple(B.shape)}.")
    n, N = U.shape[0], B.shape[0]
    if U.ndim != 2 or U.shape[1] != bits:
        raise FghashError(f"sampled outputs U must be [n, {bits}], got {tuple(U.shape)}.")
    if tuple(S.shape) != (n, N):
        raise FghashError(f"similarity S must be [n, N] = [{n}, {N}], got {tuple(S.shape)}.")
    omega = torch.as_tensor(omega, device=B.device).long()
    if omega.shape != (n,) or (n and (int(omega.min()) < 0 or int(omega.max()) >= N)):
        raise FghashError(f"omega must hold {n} row indices into the {N} database codes.")
    if not (torch.isfinite(U).all() and torch.isfinite(B).all()):
        raise FghashError("U and B must not contain NaN or infinity.")
    return omega


def adsh_objective(
    B: Tensor,
    U: Tensor,
    S: Tensor,
    omega: Tensor,
    gamma: float,
    bits: int,
    soft_similarity: bool = False,
) -> float:
    """``J(B) = ‖U Bᵀ − k S̃‖² + γ ‖U − B_Ω‖²`` (unnormalised sums, ADSH's objective)."""
    omega = _check(B, U, S, omega, bits)
    St = similarity_targets(S, soft_similarity).to(U.dtype)
    hash_term = ((U @ B.T - bits * St) ** 2).sum()
    quant_term = ((U - B[omega]) ** 2).sum()
    return float(hash_term + gamma * quant_term)


@torch.no_grad()
def update_database_codes(
    B: Tensor,
    U: Tensor,
    S: Tensor,
    omega: Tensor,
    gamma: float,
    bits: int,
    soft_similarity: bool = False,
) -> Tensor:
    """One sweep of ADSH's bit-wise update of the database codes (see the module docstring).

    Args:
        B: current database codes ``[N, k]`` (±1; any real start such as ``randn`` works,
            the bits not yet updated in the sweep are used as they are).
        U: relaxed network outputs ``tanh(F(I_i))`` of the sampled items ``[n, k]``.
        S: ``{0,1}`` similarity of the sampled items to the whole database ``[n, N]``.
        omega: database row of each sampled item ``[n]`` (repeats are summed into ``Ū``).
        gamma: quantization weight ``γ`` (ADSH and A²-Net use 200).
        bits: code length ``k``.
        soft_similarity: use the soft targets of :func:`similarity_targets`.

    Returns:
        New ±1 codes ``[N, k]`` (``B`` is not modified). Where the closed form is exactly
        0 both signs are optimal and the bit keeps its previous sign (+1 if it had none).
    """
    omega = _check(B, U, S, omega, bits)
    U = U.to(B.dtype)
    St = similarity_targets(S, soft_similarity).to(B.dtype)
    U_bar = torch.zeros_like(B).index_add_(0, omega, U)
    Q = bits * (St.T @ U) + gamma * U_bar  # [N, k]
    G = U.T @ U  # [k, k]; B̂ Ûᵀ U_b = B G_b − B_b G_bb
    B = B.clone()
    for b in range(bits):
        cross = B @ G[:, b] - B[:, b] * G[b, b]
        score = Q[:, b] - cross
        prev = torch.where(B[:, b] < 0, -1.0, 1.0).to(B.dtype)
        B[:, b] = torch.where(score > 0, 1.0, torch.where(score < 0, -1.0, prev)).to(B.dtype)
    return B
