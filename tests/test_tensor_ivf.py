"""The GPU IVF engine (index/tensor_ivf.py) on CPU tensors: the same code paths as on a
GPU, checked against FAISS's CPU IndexBinaryIVF search of the same index, exactly (same
distances, same ids in the same order: ties by ascending id, FAISS's heap rule at the
k-th distance), padding included."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
faiss = pytest.importorskip("faiss")

from fghash.errors import FghashError  # noqa: E402
from index.binary import MISSING_DISTANCE, build_index  # noqa: E402
from index.tensor import pick_engine  # noqa: E402
from index.tensor_ivf import TensorIVF, tensor_ivf_from_binary  # noqa: E402


def _codes(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    c = rng.integers(0, 256, (n, (bits + 7) // 8), dtype=np.uint8)
    if bits % 8:
        c[:, -1] &= (1 << (bits % 8)) - 1
    return c


def _world(bits: int, n: int = 1200, nlist: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed + bits)
    xb = _codes(rng, n, bits)
    xb[50:120] = xb[0]  # many equal codes: ties at every k
    xq = _codes(rng, 12, bits)
    xq[0] = xb[0]
    return build_index(xb, bits, "ivf", nlist=nlist), xq


def _same(bi, t, xq, k, nprobe):
    D, I = bi.search(xq, k, nprobe=nprobe)
    Dt, It = t.search(xq, k, nprobe=nprobe)
    np.testing.assert_array_equal(Dt, D)
    np.testing.assert_array_equal(It, I)
    return D, I


@pytest.mark.parametrize("bits", [32, 64, 128, 256, 12])
def test_equal_to_faiss_for_every_nprobe_and_k(bits):
    bi, xq = _world(bits)
    t = tensor_ivf_from_binary(bi, device="cpu", memory_bytes=300_000, query_block=3)
    assert (t.kind, t.engine, t.ntotal, t.nlist) == ("ivf", "tensor", bi.ntotal, 16)
    for nprobe in (1, 8, 16):
        for k in (1, 10, 37, 200, bi.ntotal):
            _same(bi, t, xq, k, nprobe)


def test_tiny_blocks_give_the_same_answer():
    bi, xq = _world(64)
    big = tensor_ivf_from_binary(bi, device="cpu")
    small = tensor_ivf_from_binary(bi, device="cpu", memory_bytes=1, query_block=1)
    assert small.blocks(np.array([5, 5, 5]), 10) == [(0, 1), (1, 2), (2, 3)]
    for k in (1, 50):
        D, I = big.search(xq, k, nprobe=4)
        D2, I2 = small.search(xq, k, nprobe=4)
        np.testing.assert_array_equal(D2, D)
        np.testing.assert_array_equal(I2, I)


def test_blocks_fit_the_budget():
    bi, _ = _world(64)
    t = tensor_ivf_from_binary(bi, device="cpu")
    counts = np.full(100, 300)
    budget = t.scan_bytes(7, 7 * 300, 10)
    blocks = t.blocks(counts, 10, budget)
    assert blocks[0] == (0, 7) and blocks[-1][1] == 100
    assert all(t.scan_bytes(e - s, 300 * (e - s), 10) <= budget for s, e in blocks)


def test_padding_where_the_probed_lists_hold_fewer_than_k():
    bi, xq = _world(64)
    t = tensor_ivf_from_binary(bi, device="cpu")
    D, I = _same(bi, t, xq, 600, 1)
    short = I == -1
    assert short.any()  # one list of ~75 codes cannot fill k=600
    assert (D[short] == MISSING_DISTANCE).all()
    assert ((I >= 0).sum(1) == [t._sizes_np[p] for p in t._coarse(bi_pad(t, xq), 1)[:, 0]]).all()


def bi_pad(t, xq):
    from index.padding import pad_codes

    return pad_codes(xq, t.bits, t.dim)


def test_empty_lists_are_probed_as_FAISS_probes_them():
    rng = np.random.default_rng(5)
    xb = _codes(rng, 800, 64)
    bi = build_index(xb, 64, "ivf", nlist=8)
    fi = bi.faiss_index
    # empty two lists: keep only the items of the others (FAISS's own remove_ids)
    assign = fi.quantizer.assign(xb, 1).ravel()
    gone = np.nonzero(np.isin(assign, [0, 3]))[0].astype(np.int64)
    fi.remove_ids(faiss.IDSelectorBatch(gone))
    assert fi.invlists.list_size(0) == 0 and fi.invlists.list_size(3) == 0
    t = tensor_ivf_from_binary(bi, device="cpu")
    xq = np.concatenate([xb[gone[:5]], _codes(rng, 5, 64)])  # queries nearest the empty lists
    for nprobe in (1, 2, 8):
        for k in (1, 10, fi.ntotal):
            _same(bi, t, xq, k, nprobe)


def test_refusals_and_the_default_nprobe():
    bi, xq = _world(64)
    t = tensor_ivf_from_binary(bi, device="cpu")
    assert t.params["nprobe"] == bi.params["nprobe"]
    D, I = bi.search(xq, 5)
    np.testing.assert_array_equal(t.search(xq, 5)[1], I)
    with pytest.raises(FghashError, match="more than the 16 lists"):
        t.search(xq, 5, nprobe=17)
    with pytest.raises(FghashError, match="ef-search"):
        t.search(xq, 5, ef_search=3)
    with pytest.raises(FghashError, match="larger than the database"):
        t.search(xq, t.ntotal + 1)
    with pytest.raises(FghashError, match="IndexBinaryIVF"):
        TensorIVF.from_faiss(faiss.IndexBinaryFlat(64), 64)


def test_radius_search_equals_faiss_within_the_probed_lists():
    bi, xq = _world(64)
    t = tensor_ivf_from_binary(bi, device="cpu")
    for nprobe in (1, 4):
        got = t.range_search(xq, 28, max_results=5000, nprobe=nprobe)
        want = bi.range_search(xq, 28, max_results=5000, nprobe=nprobe)
        np.testing.assert_array_equal(got[0], want[0])  # counts per query
        for a, b in zip(got[1:], want[1:], strict=True):
            assert sorted(a.tolist()) == sorted(b.tolist())


def test_auto_engine_on_gpu_picks_it_for_ivf_bundles():
    assert pick_engine("auto", "gpu", 10, "ivf") == ("tensor", "gpu")
    assert pick_engine("auto", "cpu", 10, "ivf") == ("faiss", "cpu")
    assert pick_engine("auto", "auto", 10, "ivf") == ("faiss", "auto")


def test_fghash_search_with_the_tensor_engine_on_an_ivf_bundle(tmp_path):
    """A real process: `fghash search --engine tensor --device cpu` on an ivf bundle
    prints what FAISS's own search of the bundle answers."""
    from fghash.codes import Split, make_codes_file, write_codes
    from index.bundle import build_bundle, load_bundle

    rng = np.random.default_rng(3)
    xb = _codes(rng, 600, 64)
    codes = write_codes(tmp_path / "codes.h5", make_codes_file(64, Split(xb)))
    bundle = tmp_path / "ivf"
    build_bundle(codes, bundle, kind="ivf", nlist=8, device="cpu")
    _, index, _ = load_bundle(bundle, device="cpu")
    hexcode = xb[7].tobytes().hex()
    out = {}
    for engine in ("tensor", "faiss"):
        r = subprocess.run(
            [sys.executable, "-m", "fghash", "search", str(bundle), "--code", hexcode, "-k",
             "20", "--nprobe", "3", "--engine", engine, "--device", "cpu", "--format", "jsonl"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        out[engine] = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert out["tensor"] == out["faiss"]
    D, I = index.search(xb[7:8], 20, nprobe=3)
    got = out["tensor"][0]
    assert [h["distance"] for h in got["results"]] == D[0].tolist()
