"""Items appended without attributes to a codes file that has them (``fghash add --images``
on the demo's bundle): their attributes are stored as unknown (255), the file stays
valid, and ``fghash explain``'s AUC leaves them out instead of counting them as negatives."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fghash.codes import Split, append_codes, make_codes_file, pack_bits, read_codes, write_codes
from fghash.codes.checks import CodesFileError, check_split
from fghash.explain.stats import auc_matrix, awareness


def _codes_file(rng: np.random.Generator, bits: int = 16):
    db = Split(
        pack_bits(rng.integers(0, 2, (8, bits))),
        ids=np.arange(8),
        labels=rng.integers(0, 3, 8),
        paths=[f"img/{i}.jpg" for i in range(8)],
        attributes=rng.integers(0, 2, (8, 3)).astype(np.uint8),
    )
    return make_codes_file(bits, db, method="itq", attribute_names=["red", "striped", "big"])


def test_append_without_attributes_stores_unknown_and_warns_once(tmp_path, caplog) -> None:
    rng = np.random.default_rng(0)
    cf = _codes_file(rng)
    path = write_codes(tmp_path / "c.h5", cf)
    new = Split(
        pack_bits(rng.integers(0, 2, (5, cf.bits))),
        ids=np.arange(100, 105),
        labels=rng.integers(0, 3, 5),
        paths=[f"new/{i}.jpg" for i in range(5)],
    )
    with caplog.at_level(logging.WARNING, logger="fghash"):
        append_codes(path, "database", new, block=3)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unknown" in warnings[0].getMessage()
    db = read_codes(path)["database"]  # validates the file
    np.testing.assert_array_equal(db.attributes[:8], cf["database"].attributes)
    np.testing.assert_array_equal(db.attributes[8:], np.full((5, 3), 255, dtype=np.uint8))
    np.testing.assert_array_equal(db.ids, np.r_[np.arange(8), np.arange(100, 105)])
    assert db.paths == cf["database"].paths + new.paths


def test_attribute_values_other_than_0_1_255_are_refused() -> None:
    ok = np.array([[0, 1, 255]], dtype=np.uint8)
    check_split("f.h5", "/database", 1, ids=np.arange(1), attributes=ok)
    with pytest.raises(CodesFileError, match="0, 1 or 255"):
        check_split("f.h5", "/database", 1, ids=np.arange(1), attributes=ok + 2)


def _auc_by_hand(s: np.ndarray, a: np.ndarray) -> float:
    """P(s_i > s_j) + ½ P(s_i = s_j) over every pair i positive, j negative."""
    pos, neg = s[a == 1], s[a == 0]
    wins = sum(float(p > q) + 0.5 * float(p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def test_auc_leaves_unknown_rows_out() -> None:
    rng = np.random.default_rng(3)
    n, k = 30, 4
    scores = np.round(rng.normal(size=(n, k)), 1)  # some ties
    attrs = rng.integers(0, 2, (n, 3)).astype(np.uint8)
    attrs[20:, :] = 255  # rows appended without attributes
    attrs[5, 1] = 255  # one item with one unknown attribute
    auc = auc_matrix(scores, attrs)
    for a in range(3):
        known = attrs[:, a] != 255
        for b in range(k):
            want = _auc_by_hand(scores[known, b], attrs[known, a])
            assert auc[a, b] == pytest.approx(want)
    # scoring the unknown rows as negatives would give other numbers
    wrong = auc_matrix(scores, np.where(attrs == 255, 0, attrs).astype(np.uint8))
    assert not np.allclose(auc, wrong)
    aw = awareness(auc)
    assert aw.per_attribute == pytest.approx(np.abs(auc - 0.5).max(axis=1).mean())


def test_attribute_known_for_no_item_gives_nan() -> None:
    scores = np.array([[0.1], [0.5], [0.2]])
    attrs = np.array([[1, 255], [0, 255], [1, 255]], dtype=np.uint8)
    auc = auc_matrix(scores, attrs)
    assert np.isnan(auc[1, 0])
    assert auc[0, 0] == pytest.approx(_auc_by_hand(scores[:, 0], attrs[:, 0]))
