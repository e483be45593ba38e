"""The clustered benchmark codes file: valid schema, sizes as asked, codes that cluster."""

from __future__ import annotations

import numpy as np
import pytest

from bench.scripts.make_codes import make_clustered_codes
from fghash.codes import read_codes, unpack_bits
from fghash.errors import FghashError


def test_clustered_codes_file_is_valid_and_clusters(tmp_path):
    path = make_clustered_codes(tmp_path / "c.h5", n=600, nq=40, bits=24, dim=64, classes=4)
    cf = read_codes(path)
    db, q = cf["database"], cf["query"]
    assert cf.bits == 24 and db.codes.shape == (600, 3) and q.codes.shape == (40, 3)
    assert db.features.shape == (600, 64) and len(set(db.ids) | set(q.ids)) == 640
    # brute-force Hamming 1-NN: far better than the 1/4 chance of a random neighbour
    qb, dbb = unpack_bits(q.codes, 24), unpack_bits(db.codes, 24)
    dist = (qb[:, None, :] != dbb[None, :, :]).sum(axis=2)
    nn = dist.argmin(axis=1)
    assert np.mean(db.labels[nn] == q.labels) > 0.6


def test_existing_file_is_kept_and_bad_sizes_refused(tmp_path):
    path = tmp_path / "c.h5"
    path.write_bytes(b"precious")
    with pytest.raises(FghashError, match="already exists"):
        make_clustered_codes(path, n=10, nq=2, bits=8, dim=4, classes=2)
    assert path.read_bytes() == b"precious"
    with pytest.raises(FghashError, match="--flip"):
        make_clustered_codes(tmp_path / "d.h5", n=10, nq=2, flip=0.7)
    assert not (tmp_path / "d.h5").exists()
