"""The Milvus backend on a real Milvus server (issue 22, item 5).

A session fixture starts the ``milvus`` package's standalone server (tests/milvus_server.py)
on free ports in a temporary folder; the tests run ``fghash build-index --backend milvus
--uri http://127.0.0.1:PORT`` with both index types, k-NN and radius searches, adds and
removes against it, and compare with brute force (tests/_knn.py), tie-aware. Milvus Lite
(tests/test_milvus.py) stays for the quick BIN_FLAT tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # milvus-lite 2.5 imports the deprecated pkg_resources
    pytest.importorskip("pymilvus", reason="pip install 'fghash[milvus]' for the Milvus tests")
pytest.importorskip(
    "milvus", reason="the Milvus server tests need 'pip install milvus==2.3.5' (Linux x86_64)"
)
if not sys.platform.startswith("linux"):
    pytest.skip("the embedded Milvus server runs on Linux here", allow_module_level=True)

from fghash.codes import Split, make_codes_file, pack_bits, read_codes, write_codes  # noqa: E402
from tests._knn import check_knn, hamming_matrix  # noqa: E402
from tests.milvus_server import MilvusServer  # noqa: E402

pytestmark = pytest.mark.slow  # a server start and four collections: about a minute

ROOT = Path(__file__).resolve().parents[1]
BITS = 30  # 4 bytes: a 32-dimension binary vector whose 2 high bits are 0
N = 20_000  # above Milvus's 16,384 results per query, so -k 16384 is possible
NLIST = 64


@pytest.fixture(scope="session")
def milvus_uri() -> Iterator[str]:
    """A Milvus server for this test session: started once, stopped and removed at the end."""
    server = MilvusServer()
    try:
        yield server.start(timeout_s=90)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Split, Split]:
    """A codes file of N clustered codes (ids, labels, paths); queries include database items
    (distance 0) and bit flips of them."""
    path = tmp_path_factory.mktemp("milvus_server") / "codes.h5"
    rng = np.random.default_rng(22)
    centres = rng.integers(0, 2, (40, BITS))
    bits = centres[rng.integers(0, 40, N)] ^ (rng.random((N, BITS)) < 0.12)
    db = Split(
        pack_bits(bits),
        ids=np.arange(N, dtype=np.int64) * 7 + 3,
        labels=rng.integers(0, 9, N),
        paths=[f"img/{i}.jpg" for i in range(N)],
    )
    qbits = bits[rng.choice(N, 12, replace=False)].copy()
    qbits[6:] ^= rng.random((6, BITS)) < 0.1
    q = Split(pack_bits(qbits), ids=np.arange(12) + 10**7)
    write_codes(path, make_codes_file(BITS, db, q))
    return path, db, q


def fghash(*args: object, ok: bool = True) -> subprocess.CompletedProcess:
    """``python -m fghash ARGS`` in a process of its own (bounded in time)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run(
        [sys.executable, "-m", "fghash", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if ok:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def _positions(rows: list[dict], ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    where = {int(i): p for p, i in enumerate(ids)}
    D = np.array([[h["distance"] for h in r["results"]] for r in rows])
    I = np.array([[where[h["id"]] for h in r["results"]] for r in rows])
    return D, I


@pytest.fixture(scope="module")
def bundles(milvus_uri: str, data, tmp_path_factory) -> dict[str, Path]:
    """BIN_FLAT and BIN_IVF_FLAT bundles of ``data``, built by ``fghash build-index``."""
    codes = data[0]
    out = tmp_path_factory.mktemp("bundles")
    built = {}
    for kind, extra in (("BIN_FLAT", ()), ("BIN_IVF_FLAT", ("--nlist", NLIST))):
        b = out / kind.lower()
        r = fghash(
            "build-index", codes, "--out", b, "--backend", "milvus", "--uri", milvus_uri,
            "--milvus-index", kind, *extra,
        )  # fmt: skip
        assert f"({kind}, HAMMING) at {milvus_uri}" in r.stdout
        meta = json.loads((b / "index.json").read_text())
        assert meta["kind"] == "milvus" and meta["ntotal"] == N
        assert meta["params"]["uri"] == milvus_uri and meta["params"]["index_type"] == kind
        built[kind] = b
    assert (
        json.loads((built["BIN_IVF_FLAT"] / "index.json").read_text())["params"]["nlist"] == NLIST
    )
    return built


@pytest.mark.parametrize("kind", ["BIN_FLAT", "BIN_IVF_FLAT"])
def test_search_equals_brute_force(kind: str, bundles, data) -> None:
    """``fghash search`` (BIN_IVF_FLAT at nprobe = nlist) returns exact k-NN, tie-aware,
    with the items' ids, labels and paths; -k 16384, Milvus's most, too."""
    codes, db, q = data
    dist = hamming_matrix(q.codes, db.codes)
    probe = ("--nprobe", NLIST) if kind == "BIN_IVF_FLAT" else ()
    for k in (50, 16_384):
        r = fghash("search", bundles[kind], "--codes", codes, "-k", k, "--format", "jsonl", *probe)
        rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        D, I = _positions(rows, db.ids)
        check_knn(D, I, dist, k)
    hit = rows[0]["results"][0]
    p = int(np.flatnonzero(db.ids == hit["id"])[0])
    assert hit["label"] == int(db.labels[p]) and hit["path"] == db.paths[p]


def test_ivf_fewer_lists_is_approximate_but_valid(bundles, data) -> None:
    """At nprobe = 1 every answer still sits at its true distance, sorted."""
    from index import load_index

    _, db, q = data
    index, _ = load_index(bundles["BIN_IVF_FLAT"])
    D, I = index.search(q.codes, 20, nprobe=1)
    dist = hamming_matrix(q.codes, db.codes)
    for row_d, row_i, truth in zip(D, I, dist, strict=True):
        ok = row_i >= 0
        np.testing.assert_array_equal(truth[row_i[ok]], row_d[ok])
        assert (np.diff(row_d[ok]) >= 0).all()


def test_top_k_above_milvus_limit_is_refused_in_one_sentence(bundles, data) -> None:
    r = fghash("search", bundles["BIN_FLAT"], "--codes", data[0], "-k", 16_385, ok=False)
    assert r.returncode == 2
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert err == [
        "Error: k=16385 is above the 16384 results a Milvus search returns per query (Milvus "
        "cannot page past it); use -k 16384 or less, or a FAISS bundle."
    ]


@pytest.mark.parametrize("kind", ["BIN_FLAT", "BIN_IVF_FLAT"])
def test_radius_equals_brute_force_at_every_radius(kind: str, bundles, data) -> None:
    """r = 0..12 (past 9 every query holds more than ``max_results``), 16, 22 and 30: the
    items within r, sorted by distance; a truncated query holds the nearest
    ``max_results`` (BIN_IVF_FLAT at nprobe = nlist)."""
    from index import load_index

    _, db, q = data
    index, _ = load_index(bundles[kind])
    kw = {"nprobe": NLIST} if kind == "BIN_IVF_FLAT" else {}
    qc = q.codes[::3]  # 4 queries: 2 database items, 2 with bits flipped
    dist = hamming_matrix(qc, db.codes)
    cap = 400
    for r in [*range(13), 16, 22, BITS]:  # each search waits for Strong consistency
        lims, D, I, truncated = index.range_search(qc, r, max_results=cap, **kw)
        for i in range(len(qc)):
            d, p = D[lims[i] : lims[i + 1]], I[lims[i] : lims[i + 1]]
            within = np.flatnonzero(dist[i] <= r)
            assert bool(truncated[i]) == (within.size > cap), (r, i)
            np.testing.assert_array_equal(d, np.sort(dist[i][within])[:cap])
            np.testing.assert_array_equal(dist[i][p], d)
            assert len(set(p.tolist())) == len(p)
            if not truncated[i]:
                assert sorted(p.tolist()) == within.tolist()
                assert all(np.diff(p[d == v]).min(initial=1) > 0 for v in set(d.tolist()))


def _small(n: int, first_id: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    return Split(
        pack_bits(rng.integers(0, 2, (n, BITS))),
        ids=np.arange(first_id, first_id + n, dtype=np.int64),
        labels=rng.integers(0, 5, n),
        paths=[f"img/{first_id + i}.jpg" for i in range(n)],
    )


def _search_ids(bundle: Path, q: np.ndarray, k: int) -> tuple[np.ndarray, list[list[int]]]:
    from index import load_index

    index, items = load_index(bundle)
    nprobe = index.params.get("nlist")  # every list: exact
    D, I = index.search(q, k, **({"nprobe": nprobe} if nprobe else {}))
    return D, [[items.record(int(p))["id"] for p in row] for row in I]


def test_add_and_remove_keep_the_collection_equal_to_a_rebuild(milvus_uri, tmp_path) -> None:
    """Rounds of ``fghash add`` and ``fghash remove`` on a BIN_IVF_FLAT collection: after each,
    the collection holds exactly the items left, searches are exact (tie-aware) at
    nprobe = nlist, and at the end they equal a collection built from the codes file."""
    from fghash.codes import CodesFile
    from index.append import add_to_bundle
    from index.milvus import open_milvus
    from index.milvus_remove import milvus_rows
    from index.remove import remove_from_bundle

    rng = np.random.default_rng(5)
    base = _small(400, 0, seed=1)
    codes = tmp_path / "c.h5"
    write_codes(codes, CodesFile(bits=BITS, splits={"database": base}, method="itq"))
    b = tmp_path / "b"
    fghash(
        "build-index", codes, "-o", b, "--backend", "milvus", "--uri", milvus_uri,
        "--milvus-index", "BIN_IVF_FLAT", "--nlist", 8, "--collection", "fghash_add_remove",
    )  # fmt: skip
    items = {int(i): c for i, c in zip(base.ids, base.codes, strict=True)}
    for rnd in range(3):
        new = _small(30, 10_000 + 100 * rnd, seed=50 + rnd)
        nf = tmp_path / f"new{rnd}.h5"
        write_codes(nf, CodesFile(bits=BITS, splits={"database": new}, method="itq"))
        items.update({int(i): c for i, c in zip(new.ids, new.codes, strict=True)})
        gone = rng.choice(sorted(items), size=25, replace=False).tolist()  # old and new ones
        if rnd == 0:  # the commands once, then the library they call (faster)
            fghash("add", b, nf)
            fghash("remove", b, "--ids", ",".join(map(str, gone)))
        else:
            add_to_bundle(b, BITS, new)
            remove_from_bundle(b, gone)
        for i in gone:
            del items[i]
        meta = json.loads((b / "index.json").read_text())
        index, _ = open_milvus(meta)
        assert meta["ntotal"] == len(items) == index.ntotal
        assert sorted(milvus_rows(index)[1].tolist()) == sorted(items)
        assert sorted(read_codes(codes)["database"].ids.tolist()) == sorted(items)
        ids = np.array(sorted(items))
        q = np.stack([items[i] for i in ids[:: len(ids) // 6][:6]])
        D, got = _search_ids(b, q, 15)
        where = {int(i): p for p, i in enumerate(ids)}
        check_knn(
            D,
            np.array([[where[i] for i in row] for row in got]),
            hamming_matrix(q, np.stack([items[i] for i in ids])),
            15,
        )
    r = fghash(
        "build-index", codes, "-o", tmp_path / "rebuilt", "--backend", "milvus", "--uri",
        milvus_uri, "--milvus-index", "BIN_IVF_FLAT", "--nlist", 8,
    )  # fmt: skip
    assert "BIN_IVF_FLAT" in r.stdout
    D1, got1 = _search_ids(b, q, 15)
    D2, got2 = _search_ids(tmp_path / "rebuilt", q, 15)
    np.testing.assert_array_equal(D1, D2)
    for d1, g1, g2 in zip(D1, got1, got2, strict=True):
        below = d1 < d1[-1]  # past the k-th distance ties may differ; below it they may not
        assert {g for g, x in zip(g1, below, strict=True) if x} == {
            g for g, x in zip(g2, below, strict=True) if x
        }
