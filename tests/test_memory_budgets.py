"""The block budgets of the tensor engine and of the ranking on a device hold what one
block allocates (measured on the CPU: every tensor an operation returns, held until
freed), results do not depend on the budget, and free GPU memory is asked for with an
explicit device index (torch before 2.5 refuses ``torch.device("cuda")``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _knn import brute_force_knn
from _peak import PeakBytes

import fghash.eval.hamming_torch as hamming_torch
import fghash.eval.ranking_torch as ranking_torch
import index.tensor as tensor_module
from fghash.codes import pack_bits
from fghash.eval.ranking import rank_hamming
from fghash.eval.ranking_torch import _BYTES, _STABLE_BYTES, block_rows, rank_hamming_torch
from index.tensor import TensorIndex


def _tied_database(n, bits, seed):
    """Codes drawn from a few distinct values: long runs of ties at every distance."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 2, (6, bits))
    return pack_bits(pool[rng.integers(0, 6, n)]), pack_bits(rng.integers(0, 2, (9, bits)))


@pytest.mark.parametrize("selection", ["count", "stream"])
@pytest.mark.parametrize("k", [1, 37, 300])
def test_one_query_block_stays_within_its_accounting(selection, k):
    xb, xq = _tied_database(2000, 48, 0)
    eng = TensorIndex(xb, 48, device="cpu", memory_bytes=256 << 10, selection=selection)
    qb, nb = eng.blocks(len(xq), k)
    assert nb < 2000 or k == 300  # several database blocks
    assert eng.block_bytes(qb, nb, k) <= 256 << 10
    block = eng._search_block if selection == "count" else eng._stream_block
    with torch.inference_mode(), PeakBytes() as meter:
        D, I = block(xq[:qb], k, nb)
    assert meter.peak <= eng.block_bytes(qb, nb, k)
    Db, Ib = brute_force_knn(xq[:qb], xb, k)
    np.testing.assert_array_equal(D.numpy(), Db)
    np.testing.assert_array_equal(I.numpy(), Ib)


def test_blocks_fit_the_budget_histograms_included():
    xb, _ = _tied_database(5000, 64, 1)
    for selection in ("count", "stream"):
        for memory in (4 << 10, 64 << 10, 1 << 20, 64 << 20):
            eng = TensorIndex(xb, 64, device="cpu", memory_bytes=memory, selection=selection)
            for nq, k in ((1, 1), (100, 10), (1000, 500)):
                qb, nb = eng.blocks(nq, k)
                assert 1 <= qb <= nq and 1 <= nb <= 5000
                if qb > 1:  # one query at its cheapest block is the floor, whatever the budget
                    assert eng.block_bytes(qb, nb, k) <= memory, (selection, memory, nq, k)


@pytest.mark.parametrize("selection", ["count", "stream"])
def test_results_do_not_depend_on_the_budget(selection):
    xb, xq = _tied_database(700, 32, 2)
    k = 50
    Db, Ib = brute_force_knn(xq, xb, k)
    for memory in (2 << 10, 40 << 10, 256 << 20):  # many tiny blocks ... one block
        D, I = TensorIndex(xb, 32, device="cpu", memory_bytes=memory, selection=selection).search(
            xq, k
        )
        np.testing.assert_array_equal(D, Db)
        np.testing.assert_array_equal(I, Ib)


def test_stream_selects_a_block_by_counting_when_it_offers_too_many():
    """Far items first, then blocks of items closer than all of them: every later block
    offers all its items, more than k a query."""
    bits, k = 16, 5
    far = np.ones((40, bits), np.uint8)
    near = np.zeros((60, bits), np.uint8)
    xb = pack_bits(np.concatenate([far, near]))
    xq = pack_bits(np.zeros((3, bits), np.uint8))
    eng = TensorIndex(xb, bits, device="cpu", query_block=3, db_block=20, selection="stream")
    D, I = eng.search(xq, k)
    Db, Ib = brute_force_knn(xq, xb, k)
    np.testing.assert_array_equal(D, Db)
    np.testing.assert_array_equal(I, Ib)
    assert (I == np.arange(40, 45)).all()


def test_the_database_operand_is_placed_before_free_memory_is_asked(monkeypatch):
    calls = []
    real_operand = tensor_module.database_operand

    def operand(*a, **kw):
        calls.append("operand")
        return real_operand(*a, **kw)

    def budget(dev, memory_bytes=None):
        calls.append("budget")
        return 1 << 20

    monkeypatch.setattr(tensor_module, "database_operand", operand)
    monkeypatch.setattr(tensor_module, "memory_budget", budget)
    TensorIndex(pack_bits(np.zeros((4, 8), np.uint8)), 8, device="cpu")
    assert calls == ["operand", "budget"]


@pytest.mark.parametrize("stable", [False, True])
@pytest.mark.parametrize("multi_hot", [False, True])
def test_ranking_block_stays_within_its_accounting(stable, multi_hot, monkeypatch):
    """Every database item relevant to every query: the stable ranking's worst case. The
    database operand is made before the measure (its unpacking is freed before blocks)."""
    rng = np.random.default_rng(3)
    bits, n_db, nq = 48, 3000, 40
    db = pack_bits(rng.integers(0, 2, (n_db, bits)))
    q = pack_bits(rng.integers(0, 2, (nq, bits)))
    if multi_hot:
        ql, dl = np.ones((nq, 5), np.uint8), np.ones((n_db, 5), np.uint8)
    else:
        ql, dl = np.zeros(nq, np.int64), np.zeros(n_db, np.int64)
    per_row = n_db * (_STABLE_BYTES if stable else _BYTES) + 56 * 22
    memory = 10 * per_row
    qb = block_rows(memory, nq, n_db, 56, stable=stable)
    assert 1 < qb < nq
    xb = hamming_torch.database_operand(db, bits, torch.device("cpu"))
    monkeypatch.setattr(ranking_torch, "database_operand", lambda *a: xb)
    with torch.inference_mode(), PeakBytes() as meter:
        got = rank_hamming_torch(
            q[:qb], db, bits, ql[:qb], dl, stable=stable, kmax=10, device="cpu",
            memory_bytes=memory, progress=False,
        )  # fmt: skip
    outputs = qb * (2 * (bits + 1) * 8 + 8 + 10) + n_db * 5 * 8  # counts, AP, top; labels
    assert meter.peak <= qb * per_row + outputs
    want = rank_hamming(q[:qb], db, bits, ql[:qb], dl, stable=stable, kmax=10)
    np.testing.assert_array_equal(got.n, want.n)
    if stable:
        np.testing.assert_allclose(got.stable_ap, want.stable_ap, rtol=1e-12)


def test_ranking_does_not_depend_on_the_budget():
    rng = np.random.default_rng(4)
    bits = 24
    db = pack_bits(rng.integers(0, 2, (500, bits)))
    q = pack_bits(rng.integers(0, 2, (30, bits)))
    ql, dl = rng.integers(0, 4, 30), rng.integers(0, 4, 500)
    want = rank_hamming(q, db, bits, ql, dl, stable=True, kmax=20)
    for memory in (1, 300 << 10, 256 << 20):  # one query a block ... one block
        got = rank_hamming_torch(
            q, db, bits, ql, dl, kmax=20, device="cpu", memory_bytes=memory, progress=False
        )
        np.testing.assert_array_equal(got.n, want.n)
        np.testing.assert_array_equal(got.r, want.r)
        np.testing.assert_allclose(got.stable_ap, want.stable_ap, rtol=1e-12)
        np.testing.assert_array_equal(got.stable_topk, want.stable_topk)


def test_free_gpu_memory_is_asked_with_a_device_index(monkeypatch):
    asked = []

    def mem_get_info(device=None):  # as torch < 2.5: a device without an index raises
        if isinstance(device, torch.device) and device.index is None:
            raise ValueError("Expected a cuda device with a specified index")
        asked.append(device)
        return 1000, 4000

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert hamming_torch.memory_budget(torch.device("cuda")) == 500
    assert hamming_torch.memory_budget(torch.device("cuda:1")) == 500
    assert asked == [3, 1]
