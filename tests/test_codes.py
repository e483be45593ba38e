"""Bit packing, the bit order FAISS reads, and the schema-v1 HDF5 codes file."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fghash.codes import (
    CodesFileError,
    Split,
    code_to_hex,
    codes_to_signs,
    hex_to_code,
    make_codes_file,
    pack_bits,
    read_codes,
    signs_to_codes,
    unpack_bits,
    write_codes,
)
from fghash.errors import FghashError
from tests._knn import hamming_matrix

faiss = pytest.importorskip("faiss")

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def bit_matrices(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    bits = draw(st.integers(1, 130))
    n = draw(st.integers(1, 12))
    return draw(arrays(np.uint8, (n, bits), elements=st.integers(0, 1))), bits


def _bit(codes: np.ndarray, i: int) -> np.ndarray:
    """Bit i as DESIGN.md defines it, written out by hand."""
    return (codes[:, i >> 3] >> (i & 7)) & 1


@SETTINGS
@given(bit_matrices())
def test_pack_unpack_round_trip(case: tuple[np.ndarray, int]) -> None:
    b01, bits = case
    codes = pack_bits(b01)
    assert codes.dtype == np.uint8 and codes.shape == (len(b01), (bits + 7) // 8)
    np.testing.assert_array_equal(unpack_bits(codes, bits), b01)
    for i in range(bits):
        np.testing.assert_array_equal(_bit(codes, i), b01[:, i])
    spare = codes.shape[1] * 8 - bits
    if spare:  # unused high bits of the last byte stay 0
        assert not (codes[:, -1] >> (8 - spare)).any()


@SETTINGS
@given(bit_matrices())
def test_signs_codes_round_trip(case: tuple[np.ndarray, int]) -> None:
    b01, bits = case
    signs = b01.astype(np.float32) * 2 - 1
    codes = signs_to_codes(signs)
    np.testing.assert_array_equal(codes_to_signs(codes, bits), signs)
    np.testing.assert_array_equal(signs_to_codes(codes_to_signs(codes, bits)), codes)


@SETTINGS
@given(arrays(np.float32, (5, 37), elements=st.floats(-3, 3, width=32)))
def test_sign_of_reals_zero_is_plus_one(x: np.ndarray) -> None:
    codes = signs_to_codes(x)
    expected = np.where(x >= 0, 1.0, -1.0).astype(np.float32)
    np.testing.assert_array_equal(codes_to_signs(codes, 37), expected)


@SETTINGS
@given(bit_matrices())
def test_hex_round_trip(case: tuple[np.ndarray, int]) -> None:
    b01, bits = case
    codes = pack_bits(b01)
    for row in codes:
        text = code_to_hex(row)
        assert len(text) == 2 * codes.shape[1]
        np.testing.assert_array_equal(hex_to_code(text, bits), row[None])
        np.testing.assert_array_equal(hex_to_code("0x" + text.upper(), bits), row[None])


def test_hex_is_byte_zero_first() -> None:
    # Bits 0 and 9 set: byte 0 = 0x01, byte 1 = 0x02.
    b01 = np.zeros((1, 16), np.uint8)
    b01[0, [0, 9]] = 1
    assert code_to_hex(pack_bits(b01)[0]) == "0102"


def test_hex_rejects_wrong_length_and_high_bits() -> None:
    with pytest.raises(FghashError, match="12-bit"):
        hex_to_code("abcdef", 12)
    with pytest.raises(FghashError, match="unused high bits"):
        hex_to_code("fff0", 12)  # byte 1 = 0xf0 sets bits 12..15
    with pytest.raises(FghashError, match="not a hexadecimal"):
        hex_to_code("zz", 8)


@SETTINGS
@given(bit_matrices(), st.integers(1, 6))
def test_faiss_reads_the_same_bit_order(case: tuple[np.ndarray, int], nq: int) -> None:
    """FAISS's Hamming distances equal a popcount of XOR over the unpacked bits."""
    b01, bits = case
    rng = np.random.default_rng(bits)
    q01 = rng.integers(0, 2, (nq, bits), dtype=np.uint8)
    xb, xq = pack_bits(b01), pack_bits(q01)
    index = faiss.IndexBinaryFlat(xb.shape[1] * 8)
    index.add(xb)
    D, I = index.search(xq, len(xb))
    faiss_dist = np.empty_like(D)
    np.put_along_axis(faiss_dist, I, D, axis=1)
    by_bits = (q01[:, None, :] != b01[None, :, :]).sum(axis=2)
    np.testing.assert_array_equal(faiss_dist, by_bits)
    np.testing.assert_array_equal(hamming_matrix(xq, xb), by_bits)


@pytest.mark.parametrize("bits", [1, 7, 8, 12, 48, 64, 130])
def test_bit_i_is_distance_one_from_zero_in_faiss(bits: int) -> None:
    eye = np.eye(bits, dtype=np.uint8)
    codes = pack_bits(eye)
    for i in range(bits):
        assert codes[i, i >> 3] == 1 << (i & 7)
        assert codes[i].sum() == codes[i, i >> 3]
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)
    zero = np.zeros((1, codes.shape[1]), np.uint8)
    D, _ = index.search(zero, bits)
    assert (D == 1).all()
    # and the one-hot codes are pairwise at distance 2
    D, I = index.search(codes[:1], bits)
    assert D[0, 0] == 0 and (D[0, 1:] == 2).all()


# --- the codes file -----------------------------------------------------------------


def _split(n: int, bits: int, rng: np.random.Generator, **kw) -> Split:
    return Split(pack_bits(rng.integers(0, 2, (n, bits))), **kw)


def _make(multilabel: bool = False, bits: int = 20) -> object:
    rng = np.random.default_rng(0)
    if multilabel:
        lab_db = rng.integers(0, 2, (9, 5)).astype(np.uint8)
        lab_q = rng.integers(0, 2, (4, 5)).astype(np.uint8)
    else:
        lab_db, lab_q = rng.integers(0, 3, 9), rng.integers(0, 3, 4)
    db = _split(
        9,
        bits,
        rng,
        ids=np.arange(100, 109),
        labels=lab_db,
        paths=[f"img/{i}.jpg" for i in range(9)],
        features=rng.normal(size=(9, 6)).astype(np.float32),
        features_kind="relaxed_code",
        attributes=rng.integers(0, 2, (9, 3)).astype(np.uint8),
    )
    q = _split(4, bits, rng, labels=lab_q, paths=["é/ü.png", "b", "c", "d"])
    return make_codes_file(
        bits,
        db,
        q,
        method="itq",
        config={"lr": 0.1, "arch": "resnet18"},
        attribute_names=["a", "b", "c"],
    )


@pytest.mark.parametrize("multilabel", [False, True])
def test_codes_file_round_trip(tmp_path, multilabel: bool) -> None:
    cf = _make(multilabel)
    path = write_codes(tmp_path / "codes.h5", cf)
    back = read_codes(path)
    assert back.bits == 20 and back.method == "itq"
    assert back.config == {"lr": 0.1, "arch": "resnet18"}
    assert back.attribute_names == ["a", "b", "c"]
    assert sorted(back.splits) == ["database", "query"]
    for name in ("database", "query"):
        a, b = cf.splits[name], back.splits[name]
        np.testing.assert_array_equal(a.codes, b.codes)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert b.paths == a.paths
        assert b.multilabel == multilabel
    db = back["database"]
    np.testing.assert_array_equal(db.features, cf.splits["database"].features)
    assert db.features.dtype == np.float32 and db.features_kind == "relaxed_code"
    np.testing.assert_array_equal(db.attributes, cf.splits["database"].attributes)
    light = read_codes(path, splits=["query"], features=False, attributes=False)
    assert list(light.splits) == ["query"] and light["query"].features is None
    with h5py.File(path) as f:
        assert f.attrs["format"] == "fghash.codes" and f.attrs["version"] == 1
        assert f.attrs["bit_order"] == "little"


def test_chunks_are_row_wise(tmp_path) -> None:
    rng = np.random.default_rng(1)
    db = _split(5000, 64, rng, features=rng.normal(size=(5000, 16)).astype(np.float32))
    path = write_codes(tmp_path / "c.h5", make_codes_file(64, db))
    with h5py.File(path) as f:
        for name, width in [("codes", 8), ("features", 16)]:
            chunks = f[f"database/{name}"].chunks
            assert chunks is not None and chunks[1] == width and chunks[0] > 1


def _rewrite_attr(path, key, value) -> None:
    with h5py.File(path, "r+") as f:
        f.attrs[key] = value


def test_wrong_version_names_file_and_attribute(tmp_path) -> None:
    path = write_codes(tmp_path / "c.h5", _make())
    _rewrite_attr(path, "version", 2)
    with pytest.raises(CodesFileError) as e:
        read_codes(path)
    assert str(path) in str(e.value) and "version" in str(e.value)


def test_wrong_format_names_file(tmp_path) -> None:
    path = write_codes(tmp_path / "c.h5", _make())
    _rewrite_attr(path, "format", "something.else")
    with pytest.raises(CodesFileError) as e:
        read_codes(path)
    assert str(path) in str(e.value) and "format" in str(e.value)


def test_wrong_code_width_on_disk_names_dataset(tmp_path) -> None:
    path = write_codes(tmp_path / "c.h5", _make())
    with h5py.File(path, "r+") as f:
        del f["database/codes"]
        f["database/codes"] = np.zeros((9, 7), np.uint8)  # 20 bits need 3 bytes
    with pytest.raises(CodesFileError) as e:
        read_codes(path)
    assert str(path) in str(e.value) and "/database/codes" in str(e.value)


def test_mismatched_rows_name_dataset(tmp_path) -> None:
    path = write_codes(tmp_path / "c.h5", _make())
    with h5py.File(path, "r+") as f:
        del f["query/labels"]
        f["query/labels"] = np.zeros(3, np.int64)  # 4 query rows
    with pytest.raises(CodesFileError, match="/query/labels"):
        read_codes(path)


def test_not_hdf5_and_missing(tmp_path) -> None:
    junk = tmp_path / "junk.h5"
    junk.write_text("hello")
    with pytest.raises(CodesFileError, match="not an HDF5"):
        read_codes(junk)
    with pytest.raises(CodesFileError, match="no such file"):
        read_codes(tmp_path / "missing.h5")


def test_failed_write_leaves_old_file_intact(tmp_path) -> None:
    path = write_codes(tmp_path / "c.h5", _make())
    before = path.read_bytes()
    bad = _make()
    bad.splits["database"].ids = np.zeros(9, np.int64)  # not unique
    with pytest.raises(CodesFileError, match="/database/ids"):
        write_codes(path, bad)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]  # no temp left behind
    wide = _make()
    wide.splits["query"].codes = np.zeros((4, 5), np.uint8)
    with pytest.raises(CodesFileError, match="/query/codes"):
        write_codes(path, wide)
    assert path.read_bytes() == before


# --- one bits check, one --bits parser ---------------------------------------------


def test_check_bits_is_the_one_range() -> None:
    from fghash.codes import MAX_BITS, check_bits

    assert MAX_BITS == 1024
    assert check_bits(1) == 1 and check_bits(np.int64(1024)) == 1024
    for bad in (0, 1025, -3):
        with pytest.raises(FghashError, match="--bits must be from 1 to 1024"):
            check_bits(bad, "--bits")
    for bad in (True, 12.0, "12", None):
        with pytest.raises(FghashError, match="itq: bits must be an integer"):
            check_bits(bad, "itq: bits")


def test_parse_bits_keeps_order_and_refuses_repeats() -> None:
    from fghash.codes import parse_bits

    assert parse_bits(" 48, 12,24,") == [48, 12, 24]
    assert parse_bits([32, "16"]) == [32, 16]
    with pytest.raises(FghashError, match="lists 24 twice"):
        parse_bits("12,24,24")
    for bad, text in (("12,x", "comma-separated"), ("1025", "from 1 to"), ("", "at least")):
        with pytest.raises(FghashError, match=text):
            parse_bits(bad)


# --- one validator: codes file, block reader and features file --------------------


@pytest.mark.parametrize(
    "change, dataset",
    [
        (dict(ids=np.array([5, 6, 5])), "/database/ids"),
        (dict(labels=np.array([0, 1])), "/database/labels"),
        (dict(paths=["a", "b"]), "/database/paths"),
    ],
)
def test_features_file_and_codes_file_refuse_the_same_split(tmp_path, change, dataset) -> None:
    from fghash.codes.features import FeatureSplit, write_features

    x = np.ones((3, 4), np.float32)
    codes = Split(codes=np.zeros((3, 1), np.uint8), features=x, **change)
    with pytest.raises(CodesFileError, match=dataset):
        write_codes(tmp_path / "c.h5", make_codes_file(8, codes))
    with pytest.raises(CodesFileError, match=dataset):
        write_features(tmp_path / "f.h5", {"database": FeatureSplit(x, **change)}, kind="b")
    assert not list(tmp_path.iterdir())


def test_block_reader_checks_shapes_like_read_codes(tmp_path) -> None:
    from fghash.codes import open_split

    path = write_codes(tmp_path / "c.h5", _make())
    with h5py.File(path, "r+") as f:
        del f["query/paths"]
        f["query/paths"] = np.array([b"a", b"b"])  # 4 query rows
    with pytest.raises(CodesFileError, match="/query/paths"):
        read_codes(path)
    with pytest.raises(CodesFileError, match="/query/paths"):
        open_split(path, "query")
    with open_split(path, "database") as r:  # the other split is fine
        assert len(r) == 9


def test_append_codes_equals_the_concatenation(tmp_path) -> None:
    from fghash.codes import append_codes

    cf = _make()
    path = write_codes(tmp_path / "c.h5", cf)
    rng = np.random.default_rng(5)
    new = _split(
        5,
        cf.bits,
        rng,
        ids=np.arange(500, 505),
        labels=rng.integers(0, 3, 5),
        paths=[f"new/{i}.jpg" for i in range(5)],
        features=rng.normal(size=(5, 6)).astype(np.float32),
        features_kind="relaxed_code",
        attributes=rng.integers(0, 2, (5, 3)).astype(np.uint8),
    )
    append_codes(path, "database", new, block=4)  # several blocks per split
    got, old = read_codes(path), cf["database"]
    db = got["database"]
    for name in ("codes", "ids", "labels", "features", "attributes"):
        want = np.concatenate([getattr(old, name), getattr(new, name)])
        np.testing.assert_array_equal(getattr(db, name), want)
    assert db.paths == old.paths + new.paths
    np.testing.assert_array_equal(got["query"].codes, cf["query"].codes)
    assert (got.method, got.config, got.attribute_names) == (
        cf.method,
        cf.config,
        cf.attribute_names,
    )
    before = path.read_bytes()
    with pytest.raises(CodesFileError, match="id 500 is already in the split"):
        append_codes(path, "database", new)
    assert path.read_bytes() == before
