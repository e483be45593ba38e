"""Hamming search, then float re-ranking (``fghash search --rerank``, :mod:`index.rerank`).

Results are checked against an independent numpy computation: brute-force Hamming
distances, a stable sort (ties by database position, as the flat index orders them),
the top ``k·X`` candidates, their float score in float64, a stable sort by score (equal
scores keep the Hamming order), the top ``k``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fghash.codes import Split, make_codes_file, signs_to_codes, write_codes
from fghash.errors import FghashError
from index import build_bundle, search_bundle
from index.rerank import rerank

BITS, N, NQ, DIM = 32, 700, 25, 24


def _split(rng: np.random.Generator, n: int, first_id: int, kind: str) -> Split:
    feats = rng.standard_normal((n, DIM)).astype(np.float32)
    codes = signs_to_codes(feats @ _PROJ)  # codes that follow the features, as hashing's do
    return Split(
        codes=codes,
        ids=np.arange(first_id, first_id + n, dtype=np.int64) * 3,
        labels=rng.integers(0, 5, n),
        features=feats,
        features_kind=kind,
    )


_PROJ = np.random.default_rng(1).standard_normal((DIM, BITS)).astype(np.float32)


def _write(path, kind="backbone", seed=0, features=True):
    rng = np.random.default_rng(seed)
    db, q = _split(rng, N, 0, kind), _split(rng, NQ, 10_000, kind)
    if not features:
        for s in (db, q):
            s.features, s.features_kind = None, None
    write_codes(path, make_codes_file(BITS, db, q, method="test"))
    return db, q


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("rerank")
    db, q = _write(d / "codes.h5")
    build_bundle(d / "codes.h5", d / "flat", device="cpu")
    return d, db, q


def _hamming(qc: np.ndarray, dc: np.ndarray) -> np.ndarray:
    x = np.unpackbits(qc[:, None, :] ^ dc[None, :, :], axis=2)
    return x.sum(axis=2)


def _reference(db, q, k, x, metric="ip"):
    """Ids and float64 scores the re-ranking must return, computed independently."""
    dist = _hamming(q.codes, db.codes)
    fb, fq = db.features.astype(np.float64), q.features.astype(np.float64)
    ids, scores = [], []
    for qi in range(len(q.codes)):
        cand = np.argsort(dist[qi], kind="stable")[: k * x]
        v = fb[cand]
        s = v @ fq[qi] if metric == "ip" else -((v - fq[qi]) ** 2).sum(axis=1)
        top = np.argsort(-s, kind="stable")[:k]
        ids.append(db.ids[cand[top]])
        scores.append(s[top])
    return np.array(ids), np.array(scores)


def _got(results):
    ids = np.array([[h["id"] for h in r["results"]] for r in results])
    scores = np.array([[h["score"] for h in r["results"]] for r in results])
    return ids, scores


@pytest.mark.parametrize(("k", "x", "metric"), [(5, 2, "ip"), (10, 4, "l2"), (3, 10, "ip")])
def test_equals_numpy(made, k, x, metric):
    d, db, q = made
    res = search_bundle(
        d / "flat", k, codes=d / "codes.h5", rerank="features", oversample=x, rerank_metric=metric
    )
    want_ids, want_scores = _reference(db, q, k, x, metric)
    ids, scores = _got(res)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-4)
    dist = _hamming(q.codes, db.codes)
    pos = {int(i): p for p, i in enumerate(db.ids)}
    for qi, r in enumerate(res):  # the distance stays the Hamming distance of each item
        assert [h["distance"] for h in r["results"]] == [
            dist[qi, pos[h["id"]]] for h in r["results"]
        ]


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_large_oversample_is_exact_float_search(made, metric):
    import faiss

    d, db, q = made
    k = 10
    res = search_bundle(
        d / "flat", k, codes=d / "codes.h5", rerank="features", oversample=N, rerank_metric=metric
    )
    kind = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    _, exact = faiss.knn(q.features, db.features, k, metric=kind)
    np.testing.assert_array_equal(_got(res)[0], db.ids[exact])


def test_other_index_kinds(made):
    """Any index kind gives candidates; a hash index may find fewer (slots left out)."""
    d, db, q = made
    build_bundle(d / "codes.h5", d / "hash", kind="hash", device="cpu", overwrite=True)
    res = search_bundle(d / "hash", 5, codes=d / "codes.h5", rerank="features", oversample=3)
    for r in res:
        s = [h["score"] for h in r["results"]]
        assert s == sorted(s, reverse=True) and len(s) <= 5


def test_rerank_function_missing_slots_and_ties():
    D = np.array([[1, 1, 2, 2147483647]], np.int32)
    I = np.array([[4, 2, 7, -1]])
    vecs = {2: [1.0, 0.0], 4: [1.0, 0.0], 7: [2.0, 0.0]}

    def take(pos):
        assert list(pos) == sorted(set(pos))  # sorted unique rows only
        return np.array([vecs[int(p)] for p in pos], np.float32)

    D2, I2, S = rerank(D, I, np.array([[1.0, 0.0]], np.float32), take, 4)
    assert I2.tolist() == [[7, 4, 2, -1]]  # 4 before 2: equal scores keep the Hamming order
    assert D2.tolist() == [[2, 1, 1, 2147483647]]
    assert S[0, :3].tolist() == [2.0, 1.0, 1.0] and S[0, 3] == -np.inf


def test_refusals(made, tmp_path):
    d, db, q = made
    with pytest.raises(FghashError, match="hex --code"):
        search_bundle(d / "flat", 3, code="00000000", rerank="features")
    with pytest.raises(FghashError, match="backbone vectors .* not relaxed codes"):
        search_bundle(d / "flat", 3, codes=d / "codes.h5", rerank="relaxed")
    with pytest.raises(FghashError, match="oversample"):
        search_bundle(d / "flat", 3, codes=d / "codes.h5", rerank="features", oversample=0)
    # a bundle whose codes file had no float vectors
    _write(tmp_path / "bare.h5", features=False)
    build_bundle(tmp_path / "bare.h5", tmp_path / "bare", device="cpu")
    with pytest.raises(FghashError, match="no float vectors"):
        search_bundle(tmp_path / "bare", 3, codes=d / "codes.h5", rerank="features")
    # the codes file changed, then went missing
    _write(tmp_path / "c.h5")
    build_bundle(tmp_path / "c.h5", tmp_path / "c", device="cpu")
    assert search_bundle(tmp_path / "c", 3, codes=d / "codes.h5", rerank="features", limit=1)
    _write(tmp_path / "c.h5", seed=5)
    with pytest.raises(FghashError, match="changed since"):
        search_bundle(tmp_path / "c", 3, codes=d / "codes.h5", rerank="features")
    (tmp_path / "c.h5").unlink()
    with pytest.raises(FghashError, match="is missing"):
        search_bundle(tmp_path / "c", 3, codes=d / "codes.h5", rerank="features")
    # queries without float vectors
    with pytest.raises(FghashError, match="holds no 24-d"):
        search_bundle(d / "flat", 3, codes=tmp_path / "bare.h5", rerank="features")


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "fghash", *map(str, args)], capture_output=True, text=True
    )


def test_cli(made):
    d, db, q = made
    p = _cli("search", d / "flat", "--codes", d / "codes.h5", "--limit", 3, "-k", 4,
             "--rerank", "features", "--oversample", 3, "--format", "jsonl")  # fmt: skip
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    want = search_bundle(
        d / "flat", 4, codes=d / "codes.h5", limit=3, rerank="features", oversample=3
    )
    assert lines == json.loads(json.dumps(want))
    assert all("score" in h for r in lines for h in r["results"])
    p = _cli("search", d / "flat", "--code", "00000000", "--rerank", "features")
    assert p.returncode == 2 and "Error: a hex --code query" in p.stderr


def test_top_stable_is_a_stable_argsort():
    """Selecting before sorting keeps argsort's order: ties in column order, -inf last,
    NaN scores handed to argsort."""
    from index.rerank import top_stable

    rng = np.random.default_rng(3)
    for t in range(200):
        nq, m = int(rng.integers(1, 6)), int(rng.integers(1, 40))
        S = rng.integers(-3, 3, (nq, m)).astype(np.float32)
        S[rng.random((nq, m)) < 0.2] = -np.inf
        if t % 5 == 0:
            S[rng.random((nq, m)) < 0.1] = np.nan
        k = int(rng.integers(0, m + 1))
        want = np.argsort(-S, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(top_stable(S, k), want)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_every_way_of_passing_the_vectors_scores_alike(metric):
    """An in-memory array (scored in place), a float64 array and a take function give
    the scores of an independent float64 computation."""
    from index.rerank import score_candidates

    rng = np.random.default_rng(4)
    fb = rng.standard_normal((300, 16)).astype(np.float32)
    fq = rng.standard_normal((7, 16)).astype(np.float32)
    I = rng.integers(-1, 300, (7, 20))
    v = fb.astype(np.float64)[np.maximum(I, 0)]
    q = fq.astype(np.float64)[:, None, :]
    want = (v * q).sum(-1) if metric == "ip" else -((v - q) ** 2).sum(-1)
    want[I < 0] = -np.inf
    for vectors in (fb, fb.astype(np.float64), fb.__getitem__):
        got = score_candidates(fq, I, vectors, metric)
        assert got.dtype == np.float32 and got.shape == I.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_counting_selection_equals_the_heap():
    """bench.rerank asks FAISS's flat index for its counting selection (use_heap off):
    the same neighbours in the same order, ties included."""
    import faiss

    rng = np.random.default_rng(5)
    for bits, n in ((8, 2000), (16, 3000), (64, 2000)):
        fi = faiss.IndexBinaryFlat(bits)
        fi.add(rng.integers(0, 256, (n, bits // 8), dtype=np.uint8))
        xq = rng.integers(0, 256, (50, bits // 8), dtype=np.uint8)
        for k in (10, 300):
            want = fi.search(xq, k)
            fi.use_heap = False
            got = fi.search(xq, k)
            fi.use_heap = True
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])


def test_compressed_features_are_read_through_hdf5(made, tmp_path):
    """Features HDF5 must decompress (no memory map): read per block, same results."""
    import h5py

    d, db, q = made
    path = tmp_path / "gz.h5"
    path.write_bytes((d / "codes.h5").read_bytes())
    with h5py.File(path, "r+") as f:
        g = f["database"]
        attrs = dict(g["features"].attrs)
        del g["features"]
        ds = g.create_dataset("features", data=db.features, chunks=(64, DIM), compression="gzip")
        ds.attrs.update(attrs)
    build_bundle(path, tmp_path / "gz", device="cpu")
    res = search_bundle(tmp_path / "gz", 5, codes=path, rerank="features", oversample=4)
    want_ids, want_scores = _reference(db, q, 5, 4)
    ids, scores = _got(res)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-4)


def test_bench_oversample_option(made, tmp_path):
    """fghash bench --oversample 3: the re-ranked rows are those of X = 3 only; 0 is
    refused in one sentence."""
    d, db, q = made
    common = ("--index-types", "flat", "--k", "5", "--runs", "1", "--latency-queries", "0")
    p = _cli("bench", d / "codes.h5", "--out", tmp_path / "r", "--oversample", "3", *common)
    assert p.returncode == 0, p.stderr
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    rows = [r for r in report["codes"][0]["throughput"]["rows"] if r["backend"] == "rerank"]
    assert sorted(r["kind"] for r in rows) == ["rerank-ip", "rerank-l2"]
    assert {r["params"]["oversample"] for r in rows} == {3}
    p = _cli("bench", d / "codes.h5", "--out", tmp_path / "r0", "--oversample", "2,0", *common)
    assert p.returncode == 2 and "Error: --oversample takes integers from 1" in p.stderr
    assert not (tmp_path / "r0" / "report.json").exists()
