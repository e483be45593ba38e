"""``fghash remove``: items out of a bundle and its codes file, by id (issue 22, item 3).

After random batches of adds and removes the bundle answers as a bundle built from
scratch on the items left (tie-aware, against a brute-force Hamming search), and its
codes file holds exactly those items in the same order; a remove killed at each step
leaves the whole before or after state.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fghash.errors import FghashError
from tests._codes import random_split, write_splits

ROOT = Path(__file__).resolve().parents[1]
BITS = 24


def _split(n: int, first_id: int, seed: int):
    return random_split(n, first_id, seed, BITS)


def _write(path: Path, database, query=None) -> None:
    write_splits(path, BITS, database, query)


def _top(items: dict[int, np.ndarray], q: np.ndarray, k: int):
    ids = np.array(sorted(items))
    bits = np.unpackbits(np.stack([items[i] for i in ids]), axis=1, bitorder="little")
    qb = np.unpackbits(q, axis=1, bitorder="little")
    dist = (qb[:, None, :] != bits[None, :, :]).sum(-1)
    return np.sort(dist, axis=1)[:, :k], [
        dict(zip(ids.tolist(), d.tolist(), strict=True)) for d in dist
    ]


def _check(bundle: Path, codes: Path | None, items: dict[int, np.ndarray], kind: str) -> None:
    """The bundle (and codes file) hold exactly ``items``; a search is right tie-aware."""
    from fghash.codes import read_codes
    from index import load_index

    index, meta = load_index(bundle)
    assert index.ntotal == len(items)
    if codes is not None:
        cf = read_codes(codes)["database"]
        assert sorted(cf.ids.tolist()) == sorted(items)
        assert all((items[int(i)] == c).all() for i, c in zip(cf.ids, cf.codes, strict=True))
        if hasattr(meta, "ids"):
            np.testing.assert_array_equal(np.asarray(meta.ids), cf.ids)  # same order
    q = np.stack([items[i] for i in sorted(items)[:5]])
    kw = {"nprobe": 4} if kind == "ivf" else {}
    D, I = index.search(q, 8, **kw)
    want, by_id = _top(items, q, 8)
    np.testing.assert_array_equal(D, want)
    for row, dist_row, truth in zip(I, D, by_id, strict=True):
        for p, d in zip(row, dist_row, strict=True):
            assert truth[int(meta.record(int(p))["id"])] == d


@pytest.mark.parametrize("kind", ["flat", "ivf", "milvus"])
def test_random_adds_and_removes_equal_a_rebuild(kind: str, tmp_path: Path) -> None:
    if kind == "milvus":
        pytest.importorskip("milvus_lite")
    from index import build_bundle
    from index.append import add_to_bundle
    from index.remove import remove_from_bundle

    rng = np.random.default_rng(7)
    base = _split(200, 0, seed=1)
    _write(tmp_path / "c.h5", base)
    extra = {"nlist": 4} if kind == "ivf" else {}
    if kind == "milvus":
        build_bundle(
            tmp_path / "c.h5", tmp_path / "b", backend="milvus", uri=str(tmp_path / "m.db")
        )
    else:
        build_bundle(tmp_path / "c.h5", tmp_path / "b", kind=kind, device="cpu", **extra)
    items = {int(i): c for i, c in zip(base.ids, base.codes, strict=True)}
    for batch in range(10):
        if batch % 2:
            new = _split(15, 10_000 + 100 * batch, seed=50 + batch)
            add_to_bundle(tmp_path / "b", BITS, new)
            items.update({int(i): c for i, c in zip(new.ids, new.codes, strict=True)})
        gone = rng.choice(sorted(items), size=12, replace=False)
        removed, left, codes = remove_from_bundle(tmp_path / "b", gone.tolist())
        assert removed == 12 and codes == tmp_path / "c.h5"
        for i in gone:
            del items[int(i)]
        assert left == len(items)
        _check(tmp_path / "b", tmp_path / "c.h5", items, kind)
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert [h for h in hidden if not h.startswith(".m.db")] == []  # Milvus Lite's own lock


def test_refusals(tmp_path: Path) -> None:
    from index import build_bundle
    from index.remove import remove_from_bundle

    _write(tmp_path / "c.h5", _split(300, 0, seed=1))
    build_bundle(tmp_path / "c.h5", tmp_path / "b", device="cpu")
    before = (tmp_path / "b" / "index.json").read_bytes()
    with pytest.raises(FghashError, match="id 9999 is not in the index"):
        remove_from_bundle(tmp_path / "b", [3, 9999])
    with pytest.raises(FghashError, match="leave .* empty"):
        remove_from_bundle(tmp_path / "b", list(range(300)))
    assert (tmp_path / "b" / "index.json").read_bytes() == before
    build_bundle(tmp_path / "c.h5", tmp_path / "h", kind="hnsw", device="cpu")
    with pytest.raises(FghashError, match="hnsw index cannot remove"):
        remove_from_bundle(tmp_path / "h", [3])


def _fghash(*args: object, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FGHASH_KILL_AT"}
    if kill_at:
        env["FGHASH_KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "fghash", *map(str, args)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_cli_remove_and_its_errors(tmp_path: Path) -> None:
    _write(tmp_path / "c.h5", _split(100, 0, seed=1))
    assert _fghash("build-index", tmp_path / "c.h5", "-o", tmp_path / "b").returncode == 0
    (tmp_path / "ids.txt").write_text("# gone\n5\n6\n\n")
    r = _fghash("remove", tmp_path / "b", "--ids", "1,2", "--ids-file", tmp_path / "ids.txt")
    assert r.returncode == 0, r.stderr
    assert "removed 4 items" in r.stdout and "96 left" in r.stdout
    r = _fghash("remove", tmp_path / "b", "--ids", "1")
    assert r.returncode == 2 and "id 1 is not in the index" in r.stderr
    assert r.stderr.count("Error:") == 1 and "Traceback" not in r.stderr
    r = _fghash("remove", tmp_path / "b")
    assert r.returncode == 2 and "--ids" in r.stderr


STEPS = [
    ("remove:codes-written", "before"),
    ("remove:bundle-written", "before"),
    ("commit:journal-written", "after"),
    ("commit:codes-renamed", "after"),
    ("swap:exchanged", "after"),
]


@pytest.mark.parametrize(("step", "state"), STEPS, ids=[s for s, _ in STEPS])
def test_remove_killed_leaves_before_or_after(tmp_path: Path, step: str, state: str) -> None:
    from fghash.codes import read_codes
    from index import load_index

    _write(tmp_path / "c.h5", _split(60, 0, seed=1))
    assert _fghash("build-index", tmp_path / "c.h5", "-o", tmp_path / "b").returncode == 0
    r = _fghash("remove", tmp_path / "b", "--ids", "3,4,50", kill_at=step)
    assert r.returncode == -signal.SIGKILL
    r = _fghash("search", tmp_path / "b", "--code", "000000", "-k", "2")
    assert r.returncode == 0, r.stderr  # a reader first: it finishes or undoes the change
    _, items = load_index(tmp_path / "b")
    want = [i for i in range(60) if state == "before" or i not in (3, 4, 50)]
    assert [int(i) for i in items.ids] == want
    assert read_codes(tmp_path / "c.h5")["database"].ids.tolist() == want
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
@pytest.mark.parametrize(
    "step", ["remove:bundle-written", "commit:journal-written", "commit:redone"]
)
def test_milvus_remove_killed_leaves_before_or_after(tmp_path: Path, step: str) -> None:
    """Milvus: the delete is made once the journal is written; killed before or after it,
    the next command makes it (again) and switches the bundle: the after state."""
    pytest.importorskip("milvus_lite")
    _write(tmp_path / "c.h5", _split(60, 0, seed=1))
    build = ("build-index", tmp_path / "c.h5", "-o", tmp_path / "b", "--backend", "milvus")
    assert _fghash(*build, "--uri", tmp_path / "m.db").returncode == 0
    r = _fghash("remove", tmp_path / "b", "--ids", "3,4,50", kill_at=step)
    assert r.returncode == -signal.SIGKILL
    r = _fghash("search", tmp_path / "b", "--code", "000000", "-k", "5")
    assert r.returncode == 0, r.stderr  # a reader first: it finishes the change
    from index import load_index
    from index.milvus_remove import milvus_rows

    index, _ = load_index(tmp_path / "b")
    after = [i for i in range(60) if i not in (3, 4, 50)]
    want = list(range(60)) if step == "remove:bundle-written" else after
    assert index.ntotal == len(want) and milvus_rows(index)[1].tolist() == want
