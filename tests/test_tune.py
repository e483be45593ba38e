"""``fghash tune``: tie-aware recall against brute force, a pick that meets every
constraint on held-out queries and that no measured point dominates, flat at N <= 100k,
one pick per seed, one sentence for impossible constraints, a bundle that searches."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bench.scripts.make_codes import make_clustered_codes
from fghash.codes import SplitReader
from index.binary import build_index
from index.tune import Constraints, Point, tie_aware_recall, tune

FGHASH = [sys.executable, "-m", "fghash"]


def _brute(xq: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """All Hamming distances, by Python's own popcount of whole codes as integers."""
    qi = [int.from_bytes(q.tobytes(), "little") for q in xq]
    bi = [int.from_bytes(b.tobytes(), "little") for b in xb]
    return np.array([[bin(q ^ b).count("1") for b in bi] for q in qi])


def _codes(path, split="database"):
    with SplitReader(path, split) as r:
        return r.read("codes")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("tune") / "c20k.h5"
    return make_clustered_codes(path, n=20_000, nq=200, bits=64, dim=0, seed=3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tune") / "c3k.h5"
    return make_clustered_codes(path, n=3_000, nq=100, bits=32, dim=0, seed=4)


def test_tie_aware_recall_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    xb = rng.integers(0, 256, (60, 2), dtype=np.uint8)  # 16 bits: many ties
    xq = rng.integers(0, 256, (6, 2), dtype=np.uint8)
    k = 7
    d = _brute(xq, xb)
    kth = np.sort(d, axis=1)[:, k - 1]
    I = np.stack([rng.permutation(60)[:k] for _ in range(6)])
    I[0] = np.argsort(d[0], kind="stable")[:k][::-1]  # exact, any order: all count
    I[1, :3] = -1  # missing slots count as misses
    tied = np.flatnonzero(d[2] == kth[2])  # a different choice among the tied items
    closer = np.flatnonzero(d[2] < kth[2])
    I[2] = np.concatenate([closer, tied[::-1]])[:k]
    want = sum(1 for q in range(6) for i in I[q] if i >= 0 and d[q, i] <= kth[q]) / (6 * k)
    got = tie_aware_recall(xq, xb, I, kth)
    assert got == pytest.approx(want)
    assert tie_aware_recall(xq[[0, 2]], xb, I[[0, 2]], kth[[0, 2]]) == 1.0


def _check_pick(r, codes_path) -> None:
    """The pick meets every constraint on the held-out queries (recomputed here) and no
    measured point dominates it."""
    c, p = r.constraints, r.pick
    assert p is not None and p.feasible
    assert r.heldout["recall"] >= c.min_recall
    if c.max_ms is not None:
        assert r.heldout["ms"] <= c.max_ms
    if c.max_memory is not None:
        assert p.memory <= c.max_memory
    for q in r.points:
        ge = (q.recall >= p.recall, q.qps >= p.qps, q.memory <= p.memory, q.build_s <= p.build_s)
        gt = (q.recall > p.recall, q.qps > p.qps, q.memory < p.memory, q.build_s < p.build_s)
        assert not (all(ge) and any(gt)), f"{q.label} dominates the pick {p.label}"


def _independent_heldout_recall(r, xb, xh) -> float:
    """Rebuild the pick and search the held-out queries; recall from brute force."""
    p = r.pick
    bi = build_index(xb, r.bits, p.kind, device="cpu", **p.build)
    _, I = bi.search(xh, r.constraints.k, **p.search)
    d = _brute(xh, xb)
    kth = np.sort(d, axis=1)[:, r.constraints.k - 1]
    hits = [d[q, i] <= kth[q] for q in range(len(xh)) for i in I[q] if i >= 0]
    return sum(hits) / I.size


def test_pick_meets_constraints_is_undominated_and_repeats(small) -> None:
    """Flat first (the default constraints), then a latency flat cannot meet: an
    approximate index that meets every constraint on held-out queries, twice the same."""
    from fghash.ops.tune import load_sample

    xb, xq, xh, bits, n = load_sample(small, "database", 100, None, 7)
    assert len(xq) == len(xh) == 100 and n == len(xb) == 20_000
    r = tune(xb, xq, xh, bits, Constraints(), time_budget=30, seed=7, gpu=False)
    assert r.pick.kind == "flat" and r.pick.recall == 1.0
    _check_pick(r, small)
    flat = r.pick
    c = Constraints(k=10, min_recall=0.9, max_ms=flat.ms / 2)
    picks = []
    for _ in range(2):
        r2 = tune(xb, xq, xh, bits, c, time_budget=30, seed=7, gpu=False)
        _check_pick(r2, small)
        assert r2.pick.kind != "flat"
        picks.append(r2.pick.label)
    assert picks[0] == picks[1]
    assert _independent_heldout_recall(r2, xb, xh) == pytest.approx(r2.heldout["recall"], abs=0.02)


def test_up_to_100k_items_picks_flat(tmp_path) -> None:
    path = make_clustered_codes(tmp_path / "c100k.h5", n=100_000, nq=400, bits=64, dim=0)
    out = tmp_path / "report"
    args = ["tune", str(path), "--queries", "200", "--time-budget", "10", "--out", str(out)]
    p = subprocess.run(
        [*FGHASH, "-q", *args, "--format", "json"], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["pick"]["kind"] == "flat" and d["n"] == 100_000
    assert d["heldout"]["recall"] == 1.0
    assert "--type=flat" in d["build_command"]
    assert {f.name for f in out.iterdir()} >= {"tune.json", "tune.md", "tune.png"}
    kinds = {q["kind"] for q in d["points"]}
    assert {"flat", "ivf", "hash", "multihash"} <= kinds


def test_same_seed_same_pick_through_the_cli(tiny) -> None:
    args = ["tune", str(tiny), "--queries", "50", "--time-budget", "10", "--format", "json"]
    picks = []
    for _ in range(2):
        p = subprocess.run(
            [*FGHASH, "-q", *args, "--seed", "5"], capture_output=True, text=True, timeout=60
        )
        assert p.returncode == 0, p.stderr
        picks.append(json.loads(p.stdout)["pick"]["label"])
    assert picks[0] == picks[1]


def test_impossible_constraints_one_sentence_exit_2(tiny) -> None:
    args = [
        "tune",
        str(tiny),
        "--queries",
        "50",
        "--time-budget",
        "5",
        "--min-recall",
        "1",
        "--max-memory",
        "1KB",
    ]
    p = subprocess.run([*FGHASH, "-q", *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: no measured index meets"), p.stderr
    assert "Traceback" not in p.stderr


def test_build_makes_a_bundle_that_searches(tiny, tmp_path) -> None:
    out = tmp_path / "picked"
    p = subprocess.run(
        [
            *FGHASH,
            "-q",
            "tune",
            str(tiny),
            "--queries",
            "50",
            "--time-budget",
            "10",
            "--build",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert f"built {out}" in p.stdout and "fghash build-index" in p.stdout
    s = subprocess.run(
        [
            *FGHASH,
            "-q",
            "search",
            str(out),
            "--codes",
            str(tiny),
            "--limit",
            "20",
            "-k",
            "5",
            "--format",
            "jsonl",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert s.returncode == 0, s.stderr
    rows = [json.loads(line) for line in s.stdout.splitlines()]
    d = _brute(_codes(tiny, "query")[:20], _codes(tiny))
    kth = np.sort(d, axis=1)[:, 4]
    for q, row in enumerate(rows):
        assert [r["distance"] for r in row["results"]] == sorted(np.sort(d[q])[:5].tolist())
        assert max(r["distance"] for r in row["results"]) == kth[q]


def test_build_of_an_approximate_pick(small, tmp_path) -> None:
    """--build with a pick that is not flat (a latency flat cannot meet): the bundle holds
    that kind and every item."""
    from fghash.ops.tune import run_tune
    from index import load_index

    first = run_tune(small, queries=100, time_budget=8)
    assert first.result.pick.kind == "flat"
    done = run_tune(
        small,
        queries=100,
        max_ms=first.result.pick.ms / 2,
        min_recall=0.9,
        time_budget=8,
        build=tmp_path / "b",
    )
    assert done.result.pick.kind != "flat"
    index, items = load_index(done.built)
    assert index.kind == done.result.pick.kind and len(items) == 20_000
    assert "--type=" + index.kind in done.build_command


def test_bad_max_memory_is_a_usage_error(tiny) -> None:
    from click.testing import CliRunner

    from fghash.cli import main

    r = CliRunner().invoke(main, ["tune", str(tiny), "--max-memory", "lots"])
    assert r.exit_code == 2 and "is not a size" in r.output


def test_parse_bytes() -> None:
    from fghash.ops.tune import parse_bytes

    assert parse_bytes("2GB") == 2 * 10**9
    assert parse_bytes("1.5 MiB") == 1.5 * 2**20
    assert parse_bytes("123") == 123
    assert parse_bytes("4k") == 4000


def test_points_are_dicts_for_json(small) -> None:
    p = Point("ivf", {"nlist": 4}, {"nprobe": 2}, 0.5, 100.0, 10, 0.1)
    d = p.as_dict()
    assert d["ms"] == 10.0 and d["label"] == "ivf(nlist=4,nprobe=2)"
