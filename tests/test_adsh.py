"""ADSH similarity and the discrete update of the database codes, against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from fghash.errors import FghashError
from fghash.training.adsh import (
    adsh_objective,
    init_database_codes,
    similarity_matrix,
    similarity_targets,
    update_database_codes,
)


def objective(B, U, S01, omega, gamma, k, soft=False):
    """ADSH objective written out from its definition, with explicit loops."""
    pos = sum(float(s) for s in S01.flatten())
    neg = S01.numel() - pos
    total = 0.0
    for i in range(U.shape[0]):
        for j in range(B.shape[0]):
            if S01[i, j] == 1:
                target = 1.0
            else:
                target = -pos / neg if soft else -1.0
            dot = sum(float(U[i, b]) * float(B[j, b]) for b in range(k))
            total += (dot - k * target) ** 2
        total += gamma * sum((float(U[i, b]) - float(B[int(omega[i]), b])) ** 2 for b in range(k))
    return total


def problem(seed, n=4, N=7, k=5, classes=3, dup=False):
    g = torch.Generator().manual_seed(seed)
    db_labels = torch.randint(0, classes, (N,), generator=g)
    omega = torch.randperm(N, generator=g)[:n]
    if dup:
        omega[1] = omega[0]
    U = torch.tanh(2 * torch.randn(n, k, generator=g, dtype=torch.float64))
    S = similarity_matrix(db_labels[omega], db_labels).double()
    B = init_database_codes(N, k, seed=int(torch.randint(0, 2**31, (), generator=g))).double()
    return B, U, S, omega


def test_similarity_matrix_single_and_multi_label():
    q, d = [0, 1, 2], [2, 0, 0, 1]
    S = similarity_matrix(q, d)
    want = [[1.0 if a == b else 0.0 for b in d] for a in q]
    assert S.tolist() == want
    mq = np.array([[1, 0, 1], [0, 1, 0]], dtype=np.uint8)
    md = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=np.uint8)
    want = [[float(any(a & b for a, b in zip(r, c, strict=True))) for c in md] for r in mq]
    assert similarity_matrix(mq, md).tolist() == want


def test_similarity_matrix_rejects_mixed_labels():
    with pytest.raises(FghashError, match="class ids"):
        similarity_matrix([0, 1], np.eye(2))
    with pytest.raises(FghashError, match="number of classes"):
        similarity_matrix(np.eye(2), np.eye(3))


def test_soft_targets_by_hand():
    S = torch.tensor([[1.0, 0, 0], [0, 1, 0]])  # P = 2, D = 4 -> dissimilar target -0.5
    assert similarity_targets(S).tolist() == [[1, -1, -1], [-1, 1, -1]]
    assert similarity_targets(S, soft=True).tolist() == [[1, -0.5, -0.5], [-0.5, 1, -0.5]]
    with pytest.raises(FghashError, match="only 0 and 1"):
        similarity_targets(torch.tensor([[0.5]]))


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_update_lowers_objective_and_returns_signs(seed, soft):
    B, U, S, omega = problem(seed)
    before = objective(B, U, S, omega, 200.0, 5, soft)
    B0 = B.clone()
    new = update_database_codes(B, U, S, omega, 200.0, 5, soft_similarity=soft)
    assert torch.equal(B, B0), "input codes must not be modified"
    assert set(new.unique().tolist()) <= {-1.0, 1.0}
    after = objective(new, U, S, omega, 200.0, 5, soft)
    assert adsh_objective(new, U, S, omega, 200.0, 5, soft) == pytest.approx(after, rel=1e-9)
    assert after <= before + 1e-9
    again = update_database_codes(new, U, S, omega, 200.0, 5, soft_similarity=soft)
    assert objective(again, U, S, omega, 200.0, 5, soft) <= after + 1e-9


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("dup", [False, True])
def test_each_bit_is_the_brute_force_optimum(soft, dup):
    # Within a sweep, bit b is chosen with bits < b already new and bits > b still old.
    k, N = 4, 7
    gamma = 40.0 if dup else 3.0
    B, U, S, omega = problem(5 + dup, n=3, N=N, k=k, dup=dup)
    new = update_database_codes(B, U, S, omega, gamma, k, soft_similarity=soft)
    for b in range(k):
        mid = torch.cat([new[:, :b], B[:, b:]], dim=1)
        best = None
        for column in itertools.product((-1.0, 1.0), repeat=N):
            trial = mid.clone()
            trial[:, b] = torch.tensor(column, dtype=trial.dtype)
            value = objective(trial, U, S, omega, gamma, k, soft)
            best = value if best is None else min(best, value)
        mid[:, b] = new[:, b]
        assert objective(mid, U, S, omega, gamma, k, soft) == pytest.approx(
            best, rel=1e-9, abs=1e-9
        )


def test_exact_ties_keep_the_previous_sign():
    B = init_database_codes(6, 3, seed=3)
    U = torch.zeros(2, 3)  # every score is 0: both signs are optimal
    S = torch.zeros(2, 6)
    new = update_database_codes(B, U, S, torch.tensor([0, 4]), 200.0, 3)
    assert torch.equal(new, B)


def test_update_validates_shapes():
    B, U, S, omega = problem(0)
    with pytest.raises(FghashError, match="similarity S"):
        update_database_codes(B, U, S[:, :3], omega, 200.0, 5)
    with pytest.raises(FghashError, match="omega"):
        update_database_codes(B, U, S, omega + 100, 200.0, 5)
    with pytest.raises(FghashError, match="database codes B"):
        update_database_codes(B[:, :2], U, S, omega, 200.0, 5)
