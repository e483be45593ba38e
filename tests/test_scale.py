"""Large-scale plumbing: id validation, block-wise build, lazy items, ``fghash add``.

Sizes are small; what is checked is correctness against independent computations
(brute-force Hamming k-NN, Python sets, byte comparison of files), not speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

faiss = pytest.importorskip("faiss")

import index.faiss_bundle as faiss_bundle  # noqa: E402
from fghash.cli import main  # noqa: E402
from fghash.codes import (  # noqa: E402
    CodesFileError,
    Split,
    file_checksum,
    ids_unique,
    make_codes_file,
    open_split,
    pack_bits,
    read_codes,
    write_codes,
)
from index import load_index, search_items  # noqa: E402
from index.items import LazyStrings, read_items  # noqa: E402
from tests._knn import check_knn, hamming_matrix  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _split(rng: np.random.Generator, n: int, bits: int, first_id: int, paths: str = "db") -> Split:
    return Split(
        pack_bits(rng.integers(0, 2, (n, bits))),
        ids=np.arange(first_id, first_id + n) * 7 + 1,
        labels=rng.integers(0, 5, n),
        paths=[f"{paths}/{first_id + i}.jpg" for i in range(n)],
    )


def _codes(path: Path, bits: int = 20, n: int = 300, nq: int = 8, first_id: int = 0, seed: int = 0):
    rng = np.random.default_rng(seed)
    db = _split(rng, n, bits, first_id)
    q = _split(rng, nq, bits, 10_000 + first_id, "q")
    return write_codes(path, make_codes_file(bits, db, q, method="itq")), db, q


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# --- validation --------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-5, 40), max_size=60), st.booleans())
def test_ids_unique_agrees_with_a_set(values: list[int], sort: bool) -> None:
    a = np.array(sorted(values) if sort else values, dtype=np.int64)
    assert ids_unique(a, block=7) == (len(set(values)) == len(values))


def test_validation_catches_one_duplicate_among_two_million(tmp_path: Path) -> None:
    n = 2_000_000
    ids = np.arange(n, dtype=np.int64)
    ids[-1] = 123_456  # a repeat at the far end of otherwise increasing ids
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        f.attrs.update(format="fghash.codes", version=1, bits=8, bit_order="little")
        g = f.create_group("database")
        g.create_dataset("codes", data=np.zeros((n, 1), np.uint8), chunks=(1 << 16, 1))
        g.create_dataset("ids", data=ids, chunks=(1 << 16,))
    with pytest.raises(CodesFileError, match="ids must be unique"):
        read_codes(path)
    with open_split(path) as r, pytest.raises(CodesFileError, match="ids must be unique"):
        r.validate(rows=300_000)
    with h5py.File(path, "r+") as f:
        f["database/ids"][-1] = n + 5  # unique again, still increasing
    with open_split(path) as r:
        r.validate(rows=300_000)
    assert len(read_codes(path)["database"]) == n


def test_split_reader_checks_padding_block_by_block(tmp_path: Path) -> None:
    path, db, _ = _codes(tmp_path / "c.h5", bits=12)
    with h5py.File(path, "r+") as f:
        f["database/codes"][250, 1] = 0x80  # bit 15 of a 12-bit code
    with open_split(path) as r, pytest.raises(CodesFileError, match="unused high bits"):
        r.validate(rows=64)


# --- block-wise build and lazy items -------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "hash", "hnsw"])
def test_blockwise_build_equals_brute_force(tmp_path: Path, monkeypatch, kind: str) -> None:
    monkeypatch.setattr(faiss_bundle, "_READ_ROWS", 37)  # many blocks, the last one short
    path, db, q = _codes(tmp_path / "c.h5")
    index, out = faiss_bundle.build_faiss_bundle(path, tmp_path / "b", kind=kind, device="cpu")
    assert index.ntotal == len(db)
    idx, items = load_index(out)
    np.testing.assert_array_equal(items.ids, db.ids)
    np.testing.assert_array_equal(items.labels, db.labels)
    assert items.paths == db.paths
    if kind == "flat":
        D, I = idx.search(q.codes, 10)
        check_knn(D, I, hamming_matrix(q.codes, db.codes), 10)
    else:  # approximate kinds: at least every item finds itself at distance 0
        D, I = idx.search(db.codes[:20], 1, **({"nflip": 0} if kind == "hash" else {}))
        assert (D[:, 0] == 0).all()


def test_lazy_items_give_the_same_records(tmp_path: Path) -> None:
    path, db, q = _codes(tmp_path / "c.h5")
    run("build-index", path, "--out", tmp_path / "b", "--device", "cpu")
    index, lazy = load_index(tmp_path / "b")
    eager = read_items(tmp_path / "b" / "items.h5", lazy=False)
    assert isinstance(lazy.paths, LazyStrings) and isinstance(lazy.ids, np.ndarray)
    assert not lazy.ids.flags.writeable  # a read-only memory map, not a copy
    a = search_items(index, lazy, q.codes, 12)
    b = search_items(index, eager, q.codes, 12)
    assert a == b
    # and the records are the codes file's rows at the returned positions
    D, I = index.search(q.codes, 12)
    for row, pos in zip(a, I, strict=True):
        assert [r["id"] for r in row["results"]] == [int(db.ids[p]) for p in pos]
        assert [r["path"] for r in row["results"]] == [db.paths[p] for p in pos]
    assert lazy.paths[-1] == db.paths[-1] and lazy.paths[3:6] == db.paths[3:6]


# --- fghash add ----------------------------------------------------------------------


def _new_items(path: Path, bits: int, n: int, first_id: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    new = _split(rng, n, bits, first_id, "new")
    write_codes(path, make_codes_file(bits, new))
    return new


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_add_equals_a_rebuild(tmp_path: Path, kind: str) -> None:
    path, db, q = _codes(tmp_path / "c.h5", n=400)
    bundle = tmp_path / "b"
    extra = ["--type", kind] + (["--nlist", "4"] if kind == "ivf" else [])
    assert run("build-index", path, "--out", bundle, "--device", "cpu", *extra).exit_code == 0
    new = _new_items(tmp_path / "new.h5", 20, 90, 5000, seed=3)
    r = run("add", bundle, tmp_path / "new.h5")
    assert r.exit_code == 0, r.output
    assert "490 in all" in r.output
    # the codes file now holds old + new rows, and index.json its checksum
    cf = read_codes(path)
    np.testing.assert_array_equal(cf["database"].codes, np.concatenate([db.codes, new.codes]))
    np.testing.assert_array_equal(cf["database"].ids, np.concatenate([db.ids, new.ids]))
    assert cf["database"].paths == db.paths + new.paths
    np.testing.assert_array_equal(cf["query"].codes, q.codes)
    meta = json.loads((bundle / "index.json").read_text())
    assert meta["ntotal"] == 490 and meta["codes"]["checksum"] == file_checksum(path)
    # search equals brute force over the concatenation (IVF probing every list is exact)
    index, items = load_index(bundle)
    all_codes = np.concatenate([db.codes, new.codes])
    kw = {"nprobe": 4} if kind == "ivf" else {}
    D, I = index.search(q.codes, 15, **kw)
    check_knn(D, I, hamming_matrix(q.codes, all_codes), 15)
    np.testing.assert_array_equal(items.ids, np.concatenate([db.ids, new.ids]))
    assert items.paths == db.paths + new.paths
    if kind == "ivf":
        assert meta["params"]["nlist"] == 4  # trained lists kept, not rebuilt


def test_add_refuses_duplicate_ids_and_changes_nothing(tmp_path: Path) -> None:
    path, db, _ = _codes(tmp_path / "c.h5")
    bundle = tmp_path / "b"
    run("build-index", path, "--out", bundle, "--device", "cpu")
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    codes_before = path.read_bytes()
    rng = np.random.default_rng(1)
    dup = Split(
        pack_bits(rng.integers(0, 2, (3, 20))),
        ids=np.array([99_999, int(db.ids[7]), 99_998]),
        labels=np.array([1, 2, 3]),
        paths=["a", "b", "c"],
    )
    write_codes(tmp_path / "dup.h5", make_codes_file(20, dup))
    r = run("add", bundle, tmp_path / "dup.h5")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"id {int(db.ids[7])} is already in" in r.output
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    assert path.read_bytes() == codes_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c.h5", "dup.h5"]


def test_add_failure_rolls_back_codes_file_and_bundle(tmp_path: Path, monkeypatch) -> None:
    path, _, _ = _codes(tmp_path / "c.h5")
    bundle = tmp_path / "b"
    run("build-index", path, "--out", bundle, "--device", "cpu")
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    codes_before = path.read_bytes()
    _new_items(tmp_path / "new.h5", 20, 10, 7000, seed=2)

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index_binary", broken)
    r = run("add", bundle, tmp_path / "new.h5")
    assert r.exit_code == 2 and "disk full" in r.output and "Traceback" not in r.output
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    assert path.read_bytes() == codes_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c.h5", "new.h5"]


def test_add_index_only_and_mismatches(tmp_path: Path) -> None:
    path, db, _ = _codes(tmp_path / "c.h5")
    bundle = tmp_path / "b"
    run("build-index", path, "--out", bundle, "--device", "cpu")
    codes_before = path.read_bytes()
    _new_items(tmp_path / "new.h5", 20, 5, 8000, seed=4)
    r = run("add", bundle, tmp_path / "new.h5", "--no-codes-file")
    assert r.exit_code == 0, r.output
    assert path.read_bytes() == codes_before
    assert json.loads((bundle / "index.json").read_text())["ntotal"] == len(db) + 5
    # the codes file is now 5 items behind the index: appending to it is refused
    _new_items(tmp_path / "more.h5", 20, 5, 8500, seed=6)
    r = run("add", bundle, tmp_path / "more.h5")
    assert r.exit_code == 2 and "out of step" in r.output
    assert path.read_bytes() == codes_before
    _new_items(tmp_path / "w.h5", 24, 5, 9000, seed=5)
    r = run("add", bundle, tmp_path / "w.h5")
    assert r.exit_code == 2 and "24-bit codes" in r.output
    r = run("add", bundle)
    assert r.exit_code == 2 and "either as NEW.h5" in r.output


def test_cli_help_does_not_import_numpy() -> None:
    code = (
        "import sys, fghash.cli\n"
        "heavy = [m for m in ('numpy', 'torch', 'faiss', 'h5py', 'fghash.baselines') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    out = subprocess.run(
        [sys.executable, "-m", "fghash.cli", "baseline", "--help"],
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    assert "itq" in out


@pytest.mark.slow
def test_add_images_encoded_by_a_run(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import fghash
    from fghash.data import generate_synthetic
    from fghash.runs.config import resolve_config
    from fghash.training.loop import train

    root = generate_synthetic(
        tmp_path / "birds", num_classes=2, train_per_class=3, test_per_class=1, image_size=32
    )
    cfg = resolve_config(
        "synthetic",
        "a2net",
        data_root=str(root),
        backbone="resnet18",
        image_size=32,
        bits=12,
        num_attention=2,
        num_samples=6,
        batch_size=3,
        max_iter=1,
        epochs=1,
        device="cpu",
        weights="none",
    )
    train(cfg, tmp_path / "run", progress=False)
    path = tmp_path / "codes.h5"
    r = run("encode", tmp_path / "run", "--out", path, "--device", "cpu")  # relaxed features
    assert r.exit_code == 0, r.output
    with h5py.File(path, "r+") as f:  # new images have no ground-truth attributes
        del f["database/attributes"]
    bundle = tmp_path / "b"
    assert run("build-index", path, "--out", bundle, "--device", "cpu").exit_code == 0
    db = read_codes(path)["database"]
    images = sorted(str(p) for p in root.rglob("*.png"))[:3]
    assert images, "the synthetic set should hold PNG images"
    r = run(
        "add",
        bundle,
        "--run",
        tmp_path / "run",
        "--images",
        images[0],
        "--images",
        images[1],
        "--images",
        images[2],
        "--label",
        1,
        "--device",
        "cpu",
    )
    assert r.exit_code == 0, r.output
    want = fghash.load(tmp_path / "run", device="cpu").encode(images)
    index, items = load_index(bundle)
    assert index.ntotal == len(db) + 3
    np.testing.assert_array_equal(items.ids[-3:], int(db.ids.max()) + 1 + np.arange(3))
    assert list(items.paths[-3:]) == images and (items.labels[-3:] == 1).all()
    D, I = index.search(want, 1)
    assert (D[:, 0] == 0).all()
    after = read_codes(path)["database"]
    np.testing.assert_array_equal(after.codes[-3:], want)
    relaxed = fghash.load(tmp_path / "run", device="cpu").encode_relaxed(images)
    np.testing.assert_allclose(after.features[-3:], relaxed, atol=1e-6)


def test_block_reads_equal_h5py_whatever_the_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 1000
    path = tmp_path / "layouts.h5"
    codes = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        f.attrs.update(format="fghash.codes", version=1, bits=24, bit_order="little")
        g = f.create_group("database")
        g.create_dataset("codes", data=codes, chunks=(64, 3))  # whole-row chunks
        g.create_dataset("ids", data=np.arange(n) * 5, compression="gzip")  # filtered
        g.create_dataset("labels", data=rng.integers(-3, 9, n))  # contiguous
        g.create_dataset("features", data=rng.standard_normal((n, 4)), chunks=(100, 2))
        g.create_dataset("attributes", shape=(n, 2), dtype=np.uint8, chunks=(128, 2))
        g["attributes"][:300] = 1  # later chunks never written: fill value 0
    with open_split(path) as r, h5py.File(path, "r") as f:
        for name in ("codes", "ids", "labels", "features", "attributes"):
            for s, e in [(0, n), (0, 1), (63, 65), (130, 999), (999, 1000), (500, 500)]:
                np.testing.assert_array_equal(r.read(name, s, e), f["database"][name][s:e])
