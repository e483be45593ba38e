"""The tensor engine (index.tensor) and ranking on a torch device (fghash.eval.ranking_torch),
run on CPU tensors, against brute force, FAISS's IndexBinaryFlat and fghash.eval.ranking."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("faiss")

from fghash.codes import pack_bits  # noqa: E402
from fghash.errors import FghashError  # noqa: E402
from fghash.eval.hamming_torch import database_operand, query_operand, row_counts  # noqa: E402
from fghash.eval.ranking import rank_hamming  # noqa: E402
from fghash.eval.ranking_torch import rank_hamming_torch  # noqa: E402
from index import build_index  # noqa: E402
from index.tensor import TensorIndex, pick_engine  # noqa: E402
from tests._knn import brute_force_knn, check_knn, hamming_matrix  # noqa: E402


def _tied_codes(rng: np.random.Generator, n: int, bits: int, pool: int) -> np.ndarray:
    """Codes drawn from a small pool of codes, so exact duplicates and ties abound."""
    base = rng.integers(0, 2, (pool, bits))
    return pack_bits(base[rng.integers(0, pool, n)])


@pytest.mark.parametrize("bits", [12, 48, 64, 128, 256])
def test_every_k_matches_flat_index_and_brute_force(bits: int) -> None:
    rng = np.random.default_rng(bits)
    n, nq = 61, 9
    xb = _tied_codes(rng, n, bits, pool=17)
    xq = np.concatenate([xb[:3], pack_bits(rng.integers(0, 2, (nq - 3, bits)))])
    flat = build_index(xb, bits, "flat", device="cpu")
    dist = hamming_matrix(xq, xb)
    one_block = TensorIndex(xb, bits, device="cpu")
    blocks = TensorIndex(xb, bits, device="cpu", query_block=2, db_block=7)
    singles = TensorIndex(xb, bits, device="cpu", query_block=4, db_block=1)
    compare = TensorIndex(xb, bits, device="cpu", db_block=20, count_method="compare")
    stream = TensorIndex(xb, bits, device="cpu", query_block=3, db_block=9, selection="stream")
    stream1 = TensorIndex(xb, bits, device="cpu", query_block=4, db_block=1, selection="stream")
    for k in range(1, n + 1):
        Df, If = flat.search(xq, k)
        Db, Ib = brute_force_knn(xq, xb, k)
        few = k in (1, 2, 30, n - 1, n)
        engines = [one_block, blocks, stream] + ([singles, compare, stream1] if few else [])
        for eng in engines:
            D, I = eng.search(xq, k)
            assert D.dtype == np.int32 and I.dtype == np.int64
            check_knn(D, I, dist, k)  # tie-aware: right distances, right items below the k-th
            np.testing.assert_array_equal(I, Ib, err_msg=f"bits={bits} k={k}: order within ties")
            np.testing.assert_array_equal(D, Df)
            np.testing.assert_array_equal(I, If)


def test_k_equals_database_size_and_huge_ties_over_blocks() -> None:
    rng = np.random.default_rng(1)
    bits, n = 12, 3000
    xb = _tied_codes(rng, n, bits, pool=5)  # ~600 copies of each code
    xq = pack_bits(rng.integers(0, 2, (7, bits)))
    for selection in ("count", "stream"):
        eng = TensorIndex(xb, bits, device="cpu", query_block=3, db_block=101, selection=selection)
        for k in (1, 599, 600, 601, 1777, n):
            D, I = eng.search(xq, k)
            Db, Ib = brute_force_knn(xq, xb, k)
            np.testing.assert_array_equal(D, Db)
            np.testing.assert_array_equal(I, Ib)


def test_default_blocks_follow_the_memory_budget() -> None:
    rng = np.random.default_rng(2)
    xb = pack_bits(rng.integers(0, 2, (500, 64)))
    xq = pack_bits(rng.integers(0, 2, (40, 64)))
    eng = TensorIndex(xb, 64, device="cpu", memory_bytes=16 * 1024)
    qb, nb = eng.blocks(40, 10)
    assert qb * nb * 16 <= 16 * 1024 and nb < 500
    D, I = eng.search(xq, 10)
    Db, Ib = brute_force_knn(xq, xb, 10)
    np.testing.assert_array_equal(I, Ib)


def test_bad_requests_and_empty_queries() -> None:
    rng = np.random.default_rng(3)
    xb = pack_bits(rng.integers(0, 2, (20, 24)))
    eng = TensorIndex(xb, 24, device="cpu")
    D, I = eng.search(np.zeros((0, 3), np.uint8), 5)
    assert D.shape == (0, 5) and I.shape == (0, 5)
    with pytest.raises(FghashError, match="larger than the database"):
        eng.search(xb[:2], 21)
    with pytest.raises(FghashError, match="k must be"):
        eng.search(xb[:2], 0)
    with pytest.raises(FghashError, match="uint8"):
        eng.search(np.zeros((2, 4), np.uint8), 3)
    with pytest.raises(FghashError, match="nprobe"):
        eng.search(xb[:2], 3, nprobe=4)
    with pytest.raises(FghashError, match="selection must be"):
        TensorIndex(xb, 24, device="cpu", selection="sort")
    with pytest.raises(FghashError, match="empty"):
        TensorIndex(np.zeros((0, 3), np.uint8), 24, device="cpu")


@pytest.mark.parametrize("bits", [64, 1024])
def test_fp16_products_are_exact_in_any_summation_order(bits: int) -> None:
    """The docstring's argument, checked: every partial sum of [-u/2, 1/2]·[x, b] rounded
    to fp16 at each step, in random orders, still ends at the exact distance."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(bits)
    q = pack_bits(rng.integers(0, 2, (4, bits)))
    x = pack_bits(rng.integers(0, 2, (6, bits)))
    x[0] = q[0]  # distance 0
    x[1] = ~q[1] if bits % 8 == 0 else x[1]  # distance bits
    qo = query_operand(q, bits, torch.device("cpu")).numpy()
    xo = database_operand(x, bits, torch.device("cpu")).numpy()
    exact = hamming_matrix(q, x)
    for i in range(len(q)):
        for j in range(len(x)):
            terms = (qo[i] * xo[j]).astype(np.float16)
            for _ in range(3):
                acc = np.float16(0)
                for t in terms[rng.permutation(len(terms))]:
                    acc = np.float16(acc + t)
                assert acc == exact[i, j]


def test_row_counts_methods_agree() -> None:
    torch = pytest.importorskip("torch")
    v = torch.from_numpy(np.random.default_rng(4).integers(0, 9, (5, 300)))
    want = np.stack([np.bincount(r, minlength=9) for r in v.numpy()])
    for method in ("bincount", "compare"):
        np.testing.assert_array_equal(row_counts(v, 9, method).numpy(), want)
    with pytest.raises(FghashError, match="count method"):
        row_counts(v, 9, "sort")


@pytest.mark.parametrize("multilabel", [False, True])
@pytest.mark.parametrize("bits", [12, 48])
def test_ranking_stats_equal_numpy_ranking(bits: int, multilabel: bool) -> None:
    rng = np.random.default_rng(bits + multilabel)
    n, nq = 400, 37
    xb = _tied_codes(rng, n, bits, pool=60)
    xq = _tied_codes(rng, nq, bits, pool=60)
    if multilabel:
        bl = (rng.random((n, 6)) < 0.25).astype(np.uint8)
        ql = (rng.random((nq, 6)) < 0.25).astype(np.uint8)
        ql[0] = 0  # a query with no relevant item
    else:
        bl, ql = rng.integers(0, 7, n), rng.integers(0, 7, nq)
    want = rank_hamming(xq, xb, bits, ql, bl, kmax=25)
    for kw in ({}, {"query_block": 4}, {"query_block": 5, "count_method": "compare"}):
        got = rank_hamming_torch(xq, xb, bits, ql, bl, kmax=25, device="cpu", **kw)
        assert got.n_database == want.n_database and got.bits == want.bits
        for field in ("n", "r", "n_relevant", "stable_topk"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
        np.testing.assert_allclose(got.stable_ap, want.stable_ap, rtol=0, atol=1e-12)
    got = rank_hamming_torch(xq, xb, bits, ql, bl, stable=False, device="cpu")
    assert got.stable_ap is None and got.stable_topk is None
    np.testing.assert_array_equal(got.r, want.r)


def test_ranking_without_labels_and_bad_labels() -> None:
    rng = np.random.default_rng(5)
    xb, xq = pack_bits(rng.integers(0, 2, (50, 20))), pack_bits(rng.integers(0, 2, (6, 20)))
    got = rank_hamming_torch(xq, xb, 20, device="cpu")
    want = rank_hamming(xq, xb, 20)
    np.testing.assert_array_equal(got.n, want.n)
    assert got.r is None and got.n_relevant is None and got.stable_ap is None
    with pytest.raises(FghashError, match="differ in form"):
        rank_hamming_torch(xq, xb, 20, np.zeros(6, int), np.zeros((50, 3), np.uint8), device="cpu")
    with pytest.raises(FghashError, match="uint8"):
        rank_hamming_torch(xq[:, :2], xb, 20, device="cpu")


def test_pick_engine_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    import index.tensor as tensor

    monkeypatch.setattr(tensor, "gpu_available", lambda: True)
    assert pick_engine("auto", "cpu", 10) == ("faiss", "cpu")
    assert pick_engine("auto", "auto", 10) == ("faiss", "auto")
    assert pick_engine("auto", "gpu", 10) == ("faiss", "gpu")
    assert pick_engine("auto", "gpu", 5000) == ("tensor", "gpu")
    assert pick_engine("tensor", "cpu", 10) == ("tensor", "cpu")
    assert pick_engine("faiss", "gpu", 10) == ("faiss", "gpu")
    monkeypatch.setattr(tensor, "gpu_available", lambda: False)
    assert pick_engine("auto", "gpu", 10) == ("tensor", "gpu")
    with pytest.raises(FghashError, match="engine must be"):
        pick_engine("cuda", "gpu", 10)


def test_bench_evaluation_dispatch() -> None:
    """fghash bench's --device picks where the ranking runs; the torch ranking, called as
    bench.evaluate calls rank_hamming, gives the same report figures."""
    from bench.evaluate import _torch_ranking, ranking_device
    from fghash.eval.metrics import summarize

    assert ranking_device("cpu") == "cpu" and ranking_device("gpu") == "cuda"
    with pytest.raises(FghashError, match="device must be"):
        ranking_device("tpu")
    rng = np.random.default_rng(6)
    xb, xq = _tied_codes(rng, 300, 24, 40), _tied_codes(rng, 20, 24, 40)
    bl, ql = rng.integers(0, 5, 300), rng.integers(0, 5, 20)
    kw = {"stable": True, "kmax": 10, "chunk_bytes": 1 << 20, "progress": False}
    got = summarize(_torch_ranking("cpu")(xq, xb, 24, ql, bl, **kw), (1, 10))
    want = summarize(rank_hamming(xq, xb, 24, ql, bl, **kw), (1, 10))

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for key, v in d.items():
            out.update(flat(v, f"{prefix}{key}/") if isinstance(v, dict) else {prefix + key: v})
        return out

    got, want = flat(got), flat(want)
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, str):
            assert got[key] == value, key
        else:  # numbers and lists of numbers (pytest.approx refuses nested lists)
            np.testing.assert_allclose(got[key], value, rtol=1e-12, atol=1e-12, err_msg=key)


def test_gpu_benchmark_smoke_on_cpu_without_faiss(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/scripts/bench_gpu_search.py runs with torch alone (the GPU machine has no FAISS)."""
    import sys

    from bench.scripts.bench_gpu_search import main

    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now fails
    out = main(
        "--device cpu --sizes 300 --nq 20 --bits 48 --k 10 --runs 1 --check 5 "
        "--map-size 20,100".split()
    )
    engines = [r["engine"] for r in out["search"]]
    assert engines == [
        "tensor/count/bincount",
        "tensor/count/compare",
        "tensor/stream/bincount",
        "topk",
    ]
    assert out["search"][0]["exact_vs_brute_force"]
    assert all(r["same_D"] for r in out["search"][1:])
    assert all(r["same_I"] for r in out["search"][1:3])
    assert len(out["map"]) == 4
