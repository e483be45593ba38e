"""The Milvus backend on Milvus Lite (embedded, a local .db file): build, search, append.

Results are compared tie-aware with brute-force Hamming k-NN and with the FAISS flat
bundle of the same codes file.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("faiss")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # milvus-lite 2.5 imports the deprecated pkg_resources
    pytest.importorskip("pymilvus", reason="pip install 'fghash[milvus]' for the Milvus tests")
    pytest.importorskip("milvus_lite", reason="Milvus Lite is not available on this platform")

from fghash.cli import main  # noqa: E402
from fghash.codes import Split, make_codes_file, pack_bits, read_codes, write_codes  # noqa: E402
from tests._knn import check_knn, hamming_matrix  # noqa: E402


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _codes(path: Path, n: int, bits: int, first_id: int, seed: int, multi: bool = False) -> Split:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, (n, 5)).astype(np.uint8) if multi else rng.integers(0, 4, n)
    s = Split(
        pack_bits(rng.integers(0, 2, (n, bits))),
        ids=np.arange(first_id, first_id + n) * 3 + 1,
        labels=labels,
        paths=[f"img/{first_id + i}.jpg" for i in range(n)],
    )
    q = Split(pack_bits(rng.integers(0, 2, (7, bits))), ids=np.arange(7) + 10**6)
    q.labels = labels[:7].copy()
    q.paths = [f"q/{i}.jpg" for i in range(7)]
    write_codes(path, make_codes_file(bits, s, q))
    return s


def _search(bundle: Path, codes: Path, k: int) -> list[dict]:
    r = run("search", bundle, "--codes", codes, "-k", k, "--format", "jsonl", "--device", "cpu")
    assert r.exit_code == 0, r.output
    return [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]


def _positions(rows: list[dict], ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    where = {int(i): p for p, i in enumerate(ids)}
    D = np.array([[h["distance"] for h in r["results"]] for r in rows])
    I = np.array([[where[h["id"]] for h in r["results"]] for r in rows])
    return D, I


def test_milvus_lite_build_search_append_equal_faiss_flat(tmp_path: Path) -> None:
    codes = tmp_path / "codes.h5"
    db = _codes(codes, n=500, bits=20, first_id=0, seed=0)
    q = read_codes(codes)["query"]
    uri = tmp_path / "milvus.db"
    r = run("build-index", codes, "--out", tmp_path / "mv", "--backend", "milvus", "--uri", uri)
    assert r.exit_code == 0, r.output
    assert "BIN_FLAT, HAMMING" in r.output
    meta = json.loads((tmp_path / "mv" / "index.json").read_text())
    assert meta["kind"] == "milvus" and meta["params"]["uri"] == str(uri.resolve())
    assert meta["ntotal"] == 500 and meta["params"]["metric"] == "HAMMING"
    assert run("build-index", codes, "--out", tmp_path / "ff", "--device", "cpu").exit_code == 0

    k = 25
    dist = hamming_matrix(q.codes, db.codes)
    got_m, got_f = _search(tmp_path / "mv", codes, k), _search(tmp_path / "ff", codes, k)
    Dm, Im = _positions(got_m, db.ids)
    Df, If = _positions(got_f, db.ids)
    check_knn(Dm, Im, dist, k)
    check_knn(Df, If, dist, k)
    np.testing.assert_array_equal(Dm, Df)
    for rm, rf in zip(got_m, got_f, strict=True):  # same records, same query rows
        assert rm["query"] == rf["query"]
        by_id = {h["id"]: h for h in rf["results"]}
        for h in rm["results"]:
            if h["id"] in by_id:
                assert h == {**by_id[h["id"]], "rank": h["rank"]}
            assert h["label"] == int(db.labels[list(db.ids).index(h["id"])])
            assert h["path"] == f"img/{(h['id'] - 1) // 3}.jpg"

    # append new items: search equals brute force over old + new
    new = _codes(tmp_path / "new.h5", n=60, bits=20, first_id=2000, seed=1)
    r = run("add", tmp_path / "mv", tmp_path / "new.h5")
    assert r.exit_code == 0, r.output
    assert "560 in all" in r.output
    assert json.loads((tmp_path / "mv" / "index.json").read_text())["ntotal"] == 560
    assert len(read_codes(codes)["database"]) == 560  # the codes file follows
    all_codes = np.concatenate([db.codes, new.codes])
    all_ids = np.concatenate([db.ids, new.ids])
    Dm, Im = _positions(_search(tmp_path / "mv", codes, k), all_ids)
    check_knn(Dm, Im, hamming_matrix(q.codes, all_codes), k)

    # duplicates are refused in one sentence and nothing changes
    r = run("add", tmp_path / "mv", tmp_path / "new.h5", "--no-codes-file")
    assert r.exit_code == 2 and f"id {int(new.ids[0])} is already in" in r.output
    assert json.loads((tmp_path / "mv" / "index.json").read_text())["ntotal"] == 560


def test_milvus_multihot_labels_and_refusals(tmp_path: Path) -> None:
    codes = tmp_path / "codes.h5"
    db = _codes(codes, n=120, bits=16, first_id=0, seed=2, multi=True)
    uri = tmp_path / "m.db"
    args = ["build-index", codes, "--out", tmp_path / "mv", "--backend", "milvus", "--uri", uri]
    assert run(*args).exit_code == 0
    rows = _search(tmp_path / "mv", codes, 5)
    for r in rows:
        for h in r["results"]:
            p = list(db.ids).index(h["id"])
            assert h["label"] == [int(j) for j in np.flatnonzero(db.labels[p])]
    # the collection exists: refused without --force, replaced with it
    r = run(*args[:-2], "--uri", uri, "--collection", "fghash_mv")
    assert r.exit_code == 2 and "already exists" in r.output
    assert run(*args, "--force").exit_code == 0
    r = run(*args[:-2], "--uri", tmp_path / "x.sqlite")
    assert r.exit_code == 2 and "ending in .db" in r.output
    r = run(
        *args[:-4],
        "--out",
        tmp_path / "ivf",
        "--backend",
        "milvus",
        "--uri",
        uri,
        "--milvus-index",
        "BIN_IVF_FLAT",
    )
    assert r.exit_code == 2 and "serves BIN_FLAT only" in r.output
    assert not (tmp_path / "ivf").exists()
    r = run("build-index", codes, "--out", tmp_path / "y", "--backend", "milvus")
    assert r.exit_code == 2 and "needs --uri" in r.output
