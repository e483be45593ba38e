"""Many writers and readers on one bundle, in real processes (issue 20).

Concurrent adds of distinct items must all land, in the bundle and its codes file alike,
and a search during adds must always return one version's whole answer. Answers are
checked against a brute-force Hamming search of the items each version holds (tie-aware:
the distances of the k nearest, and each returned id's true distance).

The writers are long-lived worker processes (tests/concurrency_worker.py), each running
the library call ``fghash add`` runs, released together for every round so that they
really contend. ``FGHASH_STRESS_REPEATS`` sets the rounds per case (default 20).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests._codes import random_split, write_splits

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("concurrency_worker.py")
BITS = 20
REPEATS = int(os.environ.get("FGHASH_STRESS_REPEATS", "20"))


def _split(n: int, first_id: int, seed: int):
    return random_split(n, first_id, seed, BITS)


def _write(path: Path, database, query=None) -> None:
    write_splits(path, BITS, database, query)


class Workers:
    """``n`` worker processes answering one JSON line per command."""

    def __init__(self, n: int) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.procs = [
            subprocess.Popen(
                [sys.executable, str(WORKER)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(n)
        ]

    def send(self, i: int, **cmd: object) -> None:
        self.procs[i].stdin.write(json.dumps(cmd, default=str) + "\n")
        self.procs[i].stdin.flush()

    def recv(self, i: int, timeout: float = 120) -> dict:
        out = self.procs[i].stdout
        ready, _, _ = select.select([out], [], [], timeout)
        assert ready, f"worker {i} gave no answer in {timeout} s"
        line = out.readline()
        assert line, f"worker {i} died"
        return json.loads(line)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.kill()
            p.wait(timeout=30)


def _brute(items: dict[int, np.ndarray], q: np.ndarray, k: int):
    """Per query: the k smallest Hamming distances, and every id's distance."""
    ids = np.array(sorted(items))
    bits = np.unpackbits(np.stack([items[i] for i in ids]), axis=1, bitorder="little")
    qb = np.unpackbits(q, axis=1, bitorder="little")
    dist = (qb[:, None, :] != bits[None, :, :]).sum(-1)
    return np.sort(dist, axis=1)[:, :k], [
        dict(zip(ids.tolist(), d.tolist(), strict=True)) for d in dist
    ]


def _matches(answer: list, items: dict[int, np.ndarray], q: np.ndarray, k: int) -> bool:
    """Whether ``answer`` (per query, ``[[id, distance], ...]``) is a right top-k over ``items``."""
    top, by_id = _brute(items, q, k)
    for row, want, dist in zip(answer, top, by_id, strict=True):
        got = [d for _, d in row]
        if got != want.tolist() or any(dist.get(i) != d for i, d in row):
            return False
    return True


def _check_union(bundle: Path, codes: Path, parts: list, kind: str) -> None:
    from fghash.codes import read_codes
    from index import load_index

    union = {int(i): c for s in parts for i, c in zip(s.ids, s.codes, strict=True)}
    cf = read_codes(codes)["database"]
    assert sorted(cf.ids.tolist()) == sorted(union)
    assert all((union[int(i)] == c).all() for i, c in zip(cf.ids, cf.codes, strict=True))
    index, items = load_index(bundle)
    np.testing.assert_array_equal(np.asarray(items.ids), cf.ids)  # in step, same order
    q = parts[0].codes[:6]
    D, I = index.search(q, 10, nprobe=4) if kind == "ivf" else index.search(q, 10)
    ids = np.asarray(items.ids)[I]
    answer = [
        [[int(i), int(d)] for i, d in zip(ir, dr, strict=True)]
        for ir, dr in zip(ids, D, strict=True)
    ]
    assert _matches(answer, union, q, 10)


def _build(codes: Path, out: Path, kind: str) -> None:
    from index import build_bundle

    build_bundle(codes, out, kind=kind, nlist=4 if kind == "ivf" else None, device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_concurrent_adds_all_land(kind: str, tmp_path: Path) -> None:
    with Workers(8) as w:
        for n in (2, 4, 8):
            for r in range(REPEATS):
                d = tmp_path / f"{n}-{r}"
                d.mkdir()
                base = _split(200, 0, seed=r)
                _write(d / "c.h5", base)
                _build(d / "c.h5", d / "b", kind)
                news = [_split(10, 1000 * (i + 1), seed=100 * r + i) for i in range(n)]
                for i, s in enumerate(news):
                    _write(d / f"new{i}.h5", s)
                for i in range(n):
                    w.send(i, op="add", bundle=d / "b", codes=d / f"new{i}.h5", wait=120)
                answers = [w.recv(i) for i in range(n)]
                assert [a["rc"] for a in answers] == [0] * n, answers
                assert sorted(a["total"] for a in answers) == [
                    200 + 10 * j for j in range(1, n + 1)
                ]
                _check_union(d / "b", d / "c.h5", [base, *news], kind)
                assert not [p.name for p in d.iterdir() if p.name.startswith(".")]


def test_search_during_adds_sees_one_version(tmp_path: Path) -> None:
    base = _split(300, 0, seed=1)
    queries = _split(5, 90_000, seed=2)
    _write(tmp_path / "c.h5", base, queries)
    _build(tmp_path / "c.h5", tmp_path / "b", "flat")
    batches = [_split(15, 1000 * (g + 1), seed=10 + g) for g in range(20)]
    for g, s in enumerate(batches):
        _write(tmp_path / f"new{g}.h5", s)
    states = [
        {int(i): c for s in [base, *batches[:g]] for i, c in zip(s.ids, s.codes, strict=True)}
        for g in range(21)
    ]
    seen: list[int] = []
    with Workers(2) as w:
        for g in range(20):  # each round: searches overlapping one add
            w.send(1, op="search", bundle=tmp_path / "b", codes=tmp_path / "c.h5", k=10, times=6)
            w.send(0, op="add", bundle=tmp_path / "b", codes=tmp_path / f"new{g}.h5", wait=60)
            assert w.recv(0)["rc"] == 0
            got = w.recv(1)
            assert got["rc"] == 0, got
            for answer in got["answers"]:
                versions = [v for v in (g, g + 1) if _matches(answer, states[v], queries.codes, 10)]
                assert versions, f"round {g}: an answer of no single version: {answer}"
                seen.extend(versions)
    assert seen and max(seen) == 20


def test_search_during_build_force_sees_one_version(tmp_path: Path) -> None:
    """`build-index --force` replacing a bundle by another one while searches run: each
    answer is the old bundle's or the new one's, whole."""
    queries = _split(4, 90_000, seed=3)
    versions = [_split(250, 0, seed=20), _split(250, 0, seed=21)]
    for v, s in enumerate(versions):
        _write(tmp_path / f"c{v}.h5", s, queries)
    _build(tmp_path / "c0.h5", tmp_path / "b", "flat")
    states = [{int(i): c for i, c in zip(s.ids, s.codes, strict=True)} for s in versions]
    seen = set()
    with Workers(2) as w:
        for g in range(10):
            w.send(1, op="search", bundle=tmp_path / "b", codes=tmp_path / "c0.h5", k=8, times=5)
            w.send(
                0, op="build", bundle=tmp_path / "b", codes=tmp_path / f"c{(g + 1) % 2}.h5", wait=60
            )
            assert w.recv(0)["rc"] == 0
            got = w.recv(1)
            assert got["rc"] == 0, got
            for answer in got["answers"]:
                which = [v for v in (0, 1) if _matches(answer, states[v], queries.codes, 8)]
                assert which, f"round {g}: an answer of neither bundle: {answer}"
                seen.update(which)
    assert seen == {0, 1}
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_search_during_adds_exits_0(tmp_path: Path) -> None:
    """The CLI, too: `fghash search` processes started while adds run never fail."""
    base = _split(300, 0, seed=1)
    _write(tmp_path / "c.h5", base, _split(3, 90_000, seed=2))
    _build(tmp_path / "c.h5", tmp_path / "b", "flat")
    for g in range(6):
        _write(tmp_path / f"new{g}.h5", _split(15, 1000 * (g + 1), seed=10 + g))
    with Workers(1) as w:
        searches = []
        deadline = time.monotonic() + 120
        for g in range(6):
            w.send(0, op="add", bundle=tmp_path / "b", codes=tmp_path / f"new{g}.h5", wait=60)
            searches.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "fghash",
                        "search",
                        tmp_path / "b",
                        "--codes",
                        tmp_path / "c.h5",
                        "-k",
                        "5",
                        "--format",
                        "jsonl",
                    ],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )  # fmt: skip
            )
            assert w.recv(0)["rc"] == 0
        for p in searches:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert p.returncode == 0, err
            assert len(out.splitlines()) == 3


MILVUS_REPEATS = int(os.environ.get("FGHASH_STRESS_REPEATS", "1"))


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 4, 8])
def test_concurrent_adds_milvus_lite(n: int, tmp_path: Path) -> None:
    """Milvus Lite: ``fghash add`` processes at once (one round each in CI; 20 with
    FGHASH_STRESS_REPEATS=20). Milvus Lite serves one process at a time, so a command
    that finds the database busy waits, saying so once."""
    pytest.importorskip("milvus_lite")
    from index import load_index

    for r in range(MILVUS_REPEATS):
        d = tmp_path / str(r)
        d.mkdir()
        base = _split(200, 0, seed=r)
        _write(d / "c.h5", base)
        build = [sys.executable, "-m", "fghash", "build-index", d / "c.h5", "-o", d / "b"]
        r_build = subprocess.run(
            [*build, "--backend", "milvus", "--uri", d / "m.db"], cwd=ROOT, capture_output=True
        )  # a process of its own: Milvus Lite serves one process at a time
        assert r_build.returncode == 0, r_build.stderr
        news = [_split(10, 1000 * (i + 1), seed=100 * r + i) for i in range(n)]
        for i, s in enumerate(news):
            _write(d / f"new{i}.h5", s)
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "fghash", "add", d / "b", d / f"new{i}.h5", "--wait", "300"],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for i in range(n)
        ]
        try:
            errs = [p.communicate(timeout=600)[1] for p in procs]
        finally:
            for p in procs:
                p.kill()
        assert [p.returncode for p in procs] == [0] * n, errs
        assert not any("Traceback" in e for e in errs)
        union = {int(i): c for s in [base, *news] for i, c in zip(s.ids, s.codes, strict=True)}
        from fghash.codes import read_codes

        cf = read_codes(d / "c.h5")["database"]
        assert sorted(cf.ids.tolist()) == sorted(union)
        index, items = load_index(d / "b")
        assert index.ntotal == len(union)
        q = base.codes[:4]
        D, I = index.search(q, 10)
        got_ids = [[items.record(int(p))["id"] for p in row] for row in I]
        answer = [
            [[i, int(dd)] for i, dd in zip(ir, dr, strict=True)]
            for ir, dr in zip(got_ids, D, strict=True)
        ]
        assert _matches(answer, union, q, 10)
