"""FAISS binary indexes: padding, exact search against brute force, bundles, bad input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from fghash.codes import Split, make_codes_file, write_codes  # noqa: E402
from fghash.errors import FghashError  # noqa: E402
from index import (  # noqa: E402
    KINDS,
    MISSING_DISTANCE,
    BinaryIndex,
    ItemMeta,
    build_from_codes,
    build_index,
    default_nlist,
    fast_dim,
    load_index,
    pad_codes,
    resolve_device,
    resolve_faiss_device,
    result_rows,
    save_index,
    search_items,
)
from index.gpu import gpu_available  # noqa: E402
from tests._knn import brute_force_knn, check_knn, check_valid, hamming_matrix  # noqa: E402

BITS = [12, 24, 32, 48, 64, 128]


def random_codes(n: int, bits: int, seed: int = 0) -> np.ndarray:
    """Random packed codes with the unused high bits cleared."""
    rng = np.random.default_rng(seed)
    return np.packbits(rng.integers(0, 2, (n, bits), dtype=np.uint8), axis=1, bitorder="little")


@pytest.fixture(autouse=True)
def _one_thread():
    faiss.omp_set_num_threads(1)


# --- padding ------------------------------------------------------------------------


def test_fast_dim_table() -> None:
    expected = {1: 32, 8: 32, 12: 32, 16: 32, 24: 32, 32: 32, 33: 64, 48: 64, 64: 64}
    expected |= {65: 128, 128: 128, 129: 160, 160: 160, 161: 256, 256: 256, 257: 512, 512: 512}
    expected |= {513: 576, 576: 576, 1000: 1024, 1024: 1024}
    assert {b: fast_dim(b) for b in expected} == expected
    for bad in (0, 1025, 1.5, True):
        with pytest.raises(FghashError):
            fast_dim(bad)


@pytest.mark.parametrize("bits", [5, 12, 48, 130])
def test_padding_keeps_hamming_distances(bits: int) -> None:
    x = random_codes(40, bits)
    dim = fast_dim(bits)
    p = pad_codes(x, bits, dim)
    assert p.shape == (40, dim // 8) and p.dtype == np.uint8
    assert (p[:, x.shape[1] :] == 0).all()
    np.testing.assert_array_equal(hamming_matrix(p, p), hamming_matrix(x, x))
    np.testing.assert_array_equal(pad_codes(x, bits, x.shape[1] * 8), x)
    with pytest.raises(FghashError):
        pad_codes(x, bits, dim + 4)


# --- exact search ---------------------------------------------------------------------


@pytest.mark.parametrize("pad", [True, False])
@pytest.mark.parametrize("bits", BITS)
def test_flat_equals_brute_force(bits: int, pad: bool) -> None:
    xb, xq = random_codes(400, bits, 1), random_codes(25, bits, 2)
    xq[0] = xb[7]  # an exact match
    index = build_index(xb, bits, "flat", device="cpu", pad=pad)
    assert index.kind == "flat" and index.device == "cpu" and index.ntotal == 400
    assert index.dim == (fast_dim(bits) if pad else 8 * xb.shape[1])
    assert index.faiss_index.d == index.dim
    dist = hamming_matrix(xq, xb)
    for k in (1, 10, 400):
        D, I = index.search(xq, k)
        assert D.dtype == np.int32 and I.dtype == np.int64
        check_knn(D, I, dist, k)
    D, I = index.search(xq, 1)
    assert D[0, 0] == 0 and dist[0, I[0, 0]] == 0


@pytest.mark.parametrize("bits", [12, 48])
def test_flat_cpu_tie_order_is_ascending_position(bits: int) -> None:
    """The documented order within ties: a stable sort of each distance row."""
    xb, xq = random_codes(500, bits, 3), random_codes(20, bits, 4)
    D, I = build_index(xb, bits, device="cpu").search(xq, 60)
    Dref, Iref = brute_force_knn(xq, xb, 60)
    np.testing.assert_array_equal(D, Dref)
    np.testing.assert_array_equal(I, Iref)


def test_hand_worked_distances() -> None:
    # 4-bit codes: 0b0000, 0b0001, 0b0011, 0b1111 (bit 0 is the lowest bit of byte 0)
    xb = np.array([[0x0], [0x1], [0x3], [0xF]], np.uint8)
    index = build_index(xb, 4, device="cpu")
    D, I = index.search(np.array([[0x2]], np.uint8), 4)  # query 0b0010
    assert D.tolist() == [[1, 1, 2, 3]] and I.tolist() == [[0, 2, 1, 3]]


def test_ivf_full_probe_equals_flat() -> None:
    bits = 32
    xb, xq = random_codes(800, bits, 5), random_codes(30, bits, 6)
    index = build_index(xb, bits, "ivf", nlist=8, device="cpu")
    assert index.params["nlist"] == 8 and index.params["nprobe"] == 8
    dist = hamming_matrix(xq, xb)
    D, I = index.search(xq, 20, nprobe=8)
    check_knn(D, I, dist, 20)
    D1, I1 = index.search(xq, 20, nprobe=1)
    check_valid(D1, I1, dist, MISSING_DISTANCE)
    assert index.faiss_index.nprobe == 8  # search-time overrides are restored


@pytest.mark.parametrize("kind", ["hnsw", "hash", "multihash"])
def test_approximate_kinds_return_valid_results(kind: str) -> None:
    bits = 48
    xb, xq = random_codes(600, bits, 7), random_codes(20, bits, 8)
    xq[:5] = xb[:5]
    index = build_index(xb, bits, kind, device="auto")
    assert index.device == "cpu" and index.kind == kind
    dist = hamming_matrix(xq, xb)
    D, I = index.search(xq, 10)
    check_valid(D, I, dist, MISSING_DISTANCE)
    assert (D[:5, 0] == 0).all()  # items identical to the query are always found


def test_hash_exhaustive_flips_are_exact() -> None:
    bits = 12
    xb, xq = random_codes(300, bits, 9), random_codes(15, bits, 10)
    dist = hamming_matrix(xq, xb)
    h = build_index(xb, bits, "hash", hash_b=8)
    check_knn(*h.search(xq, 25, nflip=8), dist, 25)
    mh = build_index(xb, bits, "multihash", hash_b=6, nhash=2)
    assert mh.params == {"hash_b": 6, "nhash": 2, "nflip": 1}
    check_knn(*mh.search(xq, 25, nflip=6), dist, 25)


def test_hash_defaults_fit_the_code() -> None:
    xb = random_codes(1000, 48)
    h = build_index(xb, 48, "hash")
    assert h.params["hash_b"] == 10  # ceil(log2 1000)
    mh = build_index(xb, 48, "multihash")
    assert mh.params["hash_b"] * mh.params["nhash"] <= 48 and mh.params["nhash"] == 4
    with pytest.raises(FghashError, match="does not fit"):
        build_index(xb, 48, "multihash", hash_b=30, nhash=2)


# --- bad input ----------------------------------------------------------------------


def test_bad_build_input() -> None:
    xb = random_codes(100, 24)
    with pytest.raises(FghashError, match="flat, ivf, hnsw, hash, multihash"):
        build_index(xb, 24, "lsh")
    with pytest.raises(FghashError, match="empty"):
        build_index(xb[:0], 24)
    with pytest.raises(FghashError, match=r"uint8 \[N, 4\] for 32-bit"):
        build_index(xb, 32)
    with pytest.raises(FghashError, match="unused high bits"):
        build_index(np.full((3, 2), 0xFF, np.uint8), 12)
    with pytest.raises(FghashError, match="device"):
        build_index(xb, 24, device="tpu")


def test_ivf_needs_enough_points() -> None:
    assert default_nlist(39) == 1 and default_nlist(10_000) == 100 and default_nlist(1521) == 39
    with pytest.raises(FghashError, match="at least 39 database items"):
        build_index(random_codes(30, 16), 16, "ivf")
    with pytest.raises(FghashError, match="--nlist 2"):
        build_index(random_codes(100, 16), 16, "ivf", nlist=10)


def test_bad_search_input() -> None:
    xb = random_codes(50, 24)
    index = build_index(xb, 24, device="cpu")
    with pytest.raises(FghashError, match="k must be"):
        index.search(xb[:2], 0)
    with pytest.raises(FghashError, match="larger than the database"):
        index.search(xb[:2], 51)
    with pytest.raises(FghashError, match="24-bit codes"):
        index.search(random_codes(2, 32), 5)
    with pytest.raises(FghashError, match="nprobe applies to ivf"):
        index.search(xb[:2], 5, nprobe=4)
    with pytest.raises(FghashError, match="ef-search applies to hnsw"):
        index.search(xb[:2], 5, ef_search=4)
    D, I = index.search(xb[0], 3)  # a single code is one query row
    assert D.shape == (1, 3) and D[0, 0] == 0


def test_resolve_device() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("gpu" if gpu_available() else "cpu")
    assert resolve_device is resolve_faiss_device  # the old name stays exported
    with pytest.raises(FghashError, match="device"):
        resolve_device("tpu")
    if not gpu_available():
        with pytest.raises(FghashError, match="faiss-gpu"):
            resolve_device("gpu")
        with pytest.raises(FghashError, match="faiss-gpu"):  # torch's spelling of gpu
            resolve_device("cuda")
        with pytest.raises(FghashError, match="faiss-gpu"):
            build_index(random_codes(10, 8), 8, "flat", device="cuda")
        assert build_index(random_codes(10, 8), 8, "hnsw", device="cuda").device == "cpu"
    else:
        assert resolve_device("cuda") == "gpu"
        with pytest.raises(FghashError, match="faiss-gpu"):
            build_index(random_codes(10, 8), 8, "flat", device="gpu")
        # kinds without a GPU version run on the CPU whatever was asked
        assert build_index(random_codes(10, 8), 8, "hnsw", device="gpu").device == "cpu"


@pytest.mark.skipif(not gpu_available(), reason="needs faiss-gpu and a GPU")
def test_gpu_flat_equals_brute_force(tmp_path) -> None:
    xb, xq = random_codes(500, 48, 11), random_codes(20, 48, 12)
    index = build_index(xb, 48, device="gpu")
    assert index.device == "gpu"
    check_knn(*index.search(xq, 30), hamming_matrix(xq, xb), 30)
    with pytest.raises(FghashError, match="2048"):
        build_index(random_codes(3000, 48), 48, device="gpu").search(xq, 2049)
    save_index(index, tmp_path / "b", ItemMeta(np.arange(500)))
    assert faiss.read_index_binary(str(tmp_path / "b" / "index.faiss")).ntotal == 500


# --- items and bundles ----------------------------------------------------------------


def test_items_map_positions_to_ids_labels_paths() -> None:
    xb = np.array([[0x0], [0x1], [0x3]], np.uint8)
    items = ItemMeta(
        ids=[100, 200, 300],
        labels=np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0]], np.uint8),
        paths=["a", "b", "c"],
    )
    assert items.record(0) == {"id": 100, "label": [0, 2], "path": "a"}
    index = build_index(xb, 3, device="cpu")
    out = search_items(index, items, np.array([[0x1]], np.uint8), 2)
    assert out == [
        {
            "query": {"id": None, "label": None, "path": None},
            "results": [
                {"rank": 1, "id": 200, "distance": 0, "label": [1], "path": "b"},
                {"rank": 2, "id": 100, "distance": 1, "label": [0, 2], "path": "a"},
            ],
        }
    ]
    rows = result_rows(np.array([[0, MISSING_DISTANCE]]), np.array([[2, -1]]), ItemMeta([7, 8, 9]))
    assert rows == [[{"rank": 1, "id": 9, "distance": 0, "label": None, "path": None}]]


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(tmp_path, kind: str) -> None:
    bits = 48
    xb, xq = random_codes(400, bits, 13), random_codes(10, bits, 14)
    index = build_index(xb, bits, kind, device="cpu")
    items = ItemMeta(
        ids=np.arange(1000, 1400), labels=np.arange(400) % 7, paths=[f"p{i}" for i in range(400)]
    )
    out = save_index(index, tmp_path / "bundle", items)
    assert sorted(p.name for p in out.iterdir()) == ["index.faiss", "index.json", "items.h5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temp folders left
    plain = faiss.read_index_binary(str(out / "index.faiss"))
    assert plain.ntotal == 400 and plain.d == 64
    meta = json.loads((out / "index.json").read_text())
    assert meta["kind"] == kind and meta["bits"] == 48 and meta["dim"] == 64 and meta["padded"]
    for path in (out, out / "index.faiss"):
        back, items2 = load_index(path)
        assert isinstance(back, BinaryIndex)
        assert (back.kind, back.bits, back.dim, back.ntotal) == (kind, 48, 64, 400)
        assert back.params == index.params
        np.testing.assert_array_equal(items2.ids, items.ids)
        np.testing.assert_array_equal(items2.labels, items.labels)
        assert items2.paths == items.paths
        for a, b in zip(index.search(xq, 15), back.search(xq, 15), strict=True):
            np.testing.assert_array_equal(a, b)


def test_save_refuses_to_clobber(tmp_path) -> None:
    xb = random_codes(60, 16)
    index, items = build_index(xb, 16, device="cpu"), ItemMeta(np.arange(60))
    path = save_index(index, tmp_path / "b", items)
    before = (path / "index.faiss").read_bytes()
    with pytest.raises(FghashError, match="already exists"):
        save_index(build_index(xb[:30], 16), path, ItemMeta(np.arange(30)))
    assert (path / "index.faiss").read_bytes() == before
    save_index(build_index(xb[:30], 16), path, ItemMeta(np.arange(30)), overwrite=True)
    assert load_index(path)[0].ntotal == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    with pytest.raises(FghashError, match="not an fghash index bundle"):
        save_index(index, other, items, overwrite=True)
    assert other.read_text() == "keep me"
    with pytest.raises(FghashError, match="items but the index holds"):
        save_index(index, tmp_path / "c", ItemMeta(np.arange(5)))
    assert not (tmp_path / "c").exists()


def test_load_missing_or_damaged(tmp_path) -> None:
    with pytest.raises(FghashError, match="no such index bundle"):
        load_index(tmp_path / "nope")
    path = save_index(
        build_index(random_codes(60, 16), 16), tmp_path / "b", ItemMeta(np.arange(60))
    )
    good = (path / "index.faiss").read_bytes()
    (path / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(FghashError, match="7 bytes but index.json records"):
        load_index(path)
    (path / "index.faiss").write_bytes(good[:100] + bytes(100) + good[200:])  # same size
    with pytest.raises(FghashError, match="does not match the SHA-256"):
        load_index(path)
    meta = json.loads((path / "index.json").read_text())
    del meta["index_file"]  # a bundle of an older fghash: FAISS's own check still applies
    (path / "index.json").write_text(json.dumps(meta))
    (path / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(FghashError, match="not a FAISS binary index"):
        load_index(path)
    (path / "index.json").write_text("{")
    with pytest.raises(FghashError, match="not valid JSON"):
        load_index(path)
    with pytest.raises(FghashError, match="not an fghash index bundle"):
        load_index(tmp_path)


def test_build_from_codes_records_source(tmp_path) -> None:
    rng = np.random.default_rng(0)
    codes = random_codes(120, 20)
    db = Split(codes, ids=np.arange(5, 125), labels=rng.integers(0, 4, 120))
    cpath = write_codes(tmp_path / "codes.h5", make_codes_file(20, db, method="itq"))
    index, items = build_from_codes(cpath, kind="flat", device="cpu")
    assert index.bits == 20 and index.ntotal == 120 and index.dim == 32
    np.testing.assert_array_equal(items.ids, np.arange(5, 125))
    assert items.source["checksum"] == "sha256:" + hashlib.sha256(cpath.read_bytes()).hexdigest()
    assert items.source["split"] == "database"
    save_index(index, tmp_path / "b", items)
    meta = json.loads((tmp_path / "b" / "index.json").read_text())
    assert meta["codes"]["checksum"] == items.source["checksum"]
    with pytest.raises(FghashError, match="no split 'query'"):
        build_from_codes(cpath, split="query")


def test_index_package_never_imports_torch() -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys, numpy as np\n"
        "import index, index.binary, index.bundle, index.gpu, index.items, index.padding\n"
        "import index.search, index.describe, index.folder, index.faiss_bundle, index.append\n"
        "index.build_index(np.zeros((3, 1), np.uint8), 8, 'flat', device='auto').search(np.zeros((1, 1), np.uint8), 2)\n"
        "assert 'torch' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
