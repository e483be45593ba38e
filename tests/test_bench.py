"""``fghash bench``, throughput rows, timing, plots and the paper table, on small real files.

The codes files are real HDF5 files written with :mod:`fghash.codes`; the indexes are
real FAISS indexes. Figures in the report are checked against brute force computed
here: stable order by ``np.argsort(kind="stable")``, tie-aware by averaging AP over every
permutation of the database (tiny case) or over many random tie-breaks (larger case).
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from bench.scripts.paper_table import main as paper_main
from bench.timing import RepeatTimer, percentiles_ms
from fghash.cli import main
from fghash.codes import Split, make_codes_file, pack_bits, write_codes
from fghash.util.atomic import default_file_mode
from fghash.viz.plots import pareto_frontier


def make_codes(
    path,
    *,
    bits=16,
    nq=40,
    nb=300,
    classes=4,
    seed=0,
    labels=True,
    features=True,
    multilabel=False,
    method="lsh",
    dataset="toy",
):
    """Clustered Gaussian features, codes = signs of a random projection (LSH)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, 24)) * 1.5
    proj = rng.standard_normal((24, bits))

    def split(n):
        lab = rng.integers(0, classes, n)
        f = (centers[lab] + rng.standard_normal((n, 24))).astype(np.float32)
        if multilabel:
            lab2 = np.zeros((n, classes), np.uint8)
            lab2[np.arange(n), lab] = 1
            lab2[np.arange(n), (lab + 1) % classes] = rng.integers(0, 2, n)
            lab = lab2
        return Split(
            codes=pack_bits(f @ proj >= 0),
            labels=lab if labels else None,
            features=f if features else None,
            features_kind="backbone" if features else None,
        )

    db, q = split(nb), split(nq)
    write_codes(
        path, make_codes_file(bits, db, q, method=method, config={"dataset": dataset, "bits": bits})
    )
    return q, db


# --- brute-force references --------------------------------------------------------------


def ap(rel) -> float:
    hits, s = 0, 0.0
    for i, x in enumerate(rel, 1):
        if x:
            hits += 1
            s += hits / i
    return s / hits if hits else 0.0


def bits_of(codes, bits):
    return np.unpackbits(codes, axis=1, bitorder="little")[:, :bits].astype(int)


def relevant(ql, dl):
    if np.ndim(ql) == 0:
        return dl == ql
    return (dl.astype(bool) & ql.astype(bool)).any(axis=1)


def ref_hamming(q, db, bits):
    qb, dbb = bits_of(q.codes, bits), bits_of(db.codes, bits)
    return np.array([[int((a != b).sum()) for b in dbb] for a in qb])


def ref_stable_map(q, db, bits, k=None):
    d = ref_hamming(q, db, bits)
    out = []
    for i in range(len(d)):
        rel = relevant(q.labels[i], db.labels)[np.argsort(d[i], kind="stable")]
        out.append(ap(rel[:k].tolist()))
    return float(np.mean(out))


def ref_tie_aware_map_exact(q, db, bits):
    """Average over every permutation of the database, then a stable sort by distance."""
    d = ref_hamming(q, db, bits)
    n = len(db.codes)
    out = []
    for i in range(len(d)):
        rel = relevant(q.labels[i], db.labels)
        vals = [
            ap([rel[j] for j in sorted(p, key=lambda j: d[i][j])])
            for p in itertools.permutations(range(n))
        ]
        out.append(np.mean(vals))
    return float(np.mean(out))


def ref_tie_aware_map_sampled(q, db, bits, draws=400, seed=0):
    """Monte-Carlo over random tie-breaks (an independent check with a tolerance)."""
    rng = np.random.default_rng(seed)
    d = ref_hamming(q, db, bits)
    rel = np.stack([relevant(q.labels[i], db.labels) for i in range(len(d))])
    tot = []
    for _ in range(draws):
        order = np.lexsort((rng.random(d.shape), d), axis=1)
        r = np.take_along_axis(rel, order, axis=1)
        cum = np.cumsum(r, axis=1)
        prec = cum / np.arange(1, r.shape[1] + 1)
        tot.append(
            np.mean(np.where(cum[:, -1] > 0, (prec * r).sum(1) / np.maximum(cum[:, -1], 1), 0))
        )
    return float(np.mean(tot)), float(np.std(tot) / math.sqrt(draws))


def ref_float_map(q, db, metric):
    out = []
    for i in range(len(q.codes)):
        x = db.features.astype(np.float64)
        y = q.features[i].astype(np.float64)
        key = -(x @ y) if metric == "ip" else ((x - y) ** 2).sum(1)
        rel = relevant(q.labels[i], db.labels)[np.argsort(key, kind="stable")]
        out.append(ap(rel.tolist()))
    return float(np.mean(out))


FAST = ["--runs", "1", "--latency-queries", "3", "--threads", "1", "--device", "cpu"]


# --- the bench command ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    q, db = make_codes(tmp / "toy16.h5", bits=16)
    out = tmp / "report"
    res = CliRunner().invoke(
        main, ["bench", str(tmp / "toy16.h5"), "--out", str(out), "--k", "1,10", *FAST]
    )
    assert res.exit_code == 0, res.output
    return tmp, out, q, db, res


def test_bench_writes_report_md_and_plots(bench_run):
    tmp, out, q, db, res = bench_run
    for name in (
        "report.json",
        "report.md",
        "pr_curves.png",
        "qps_recall_toy16.png",
        "qps_map_toy16.png",
    ):
        assert (out / name).is_file(), name
        assert str(out / name) in res.output
    assert (out / "pr_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("report.json", "pr_curves.png"):  # not mkstemp's 0600
        assert (out / name).stat().st_mode & 0o777 == default_file_mode()
    md = (out / "report.md").read_text()
    assert "Retrieval quality" in md and "| flat | cpu |" in md and "float IP (exact)" in md
    rep = json.loads((out / "report.json").read_text())
    assert rep["threads"] == 1
    assert rep["machine"]["cpu_cores"] >= 1 and rep["machine"]["cpu_model"]
    assert rep["software"]["faiss"] and rep["software"]["numpy"]
    assert "fghash bench" in rep["command"]


def test_bench_map_matches_reference(bench_run):
    tmp, out, q, db, _ = bench_run
    c = json.loads((out / "report.json").read_text())["codes"][0]
    h = c["quality"]["hamming"]
    assert h["stable"]["map@all"] == pytest.approx(ref_stable_map(q, db, 16), abs=1e-12)
    assert h["stable"]["map@k"]["10"] == pytest.approx(ref_stable_map(q, db, 16, k=10), abs=1e-12)
    mean, se = ref_tie_aware_map_sampled(q, db, 16)
    assert h["tie-aware"]["map@all"] == pytest.approx(mean, abs=max(4 * se, 1e-4))
    for metric in ("ip", "l2"):
        got = c["quality"][f"float-{metric}"]["stable"]["map@all"]
        assert got == pytest.approx(ref_float_map(q, db, metric), abs=1e-9)


def test_bench_rows_are_consistent_with_brute_force(bench_run):
    tmp, out, q, db, _ = bench_run
    c = json.loads((out / "report.json").read_text())["codes"][0]
    rows = c["throughput"]["rows"]
    kinds = {r["kind"] for r in rows}
    assert kinds == {"flat", "ivf", "hnsw", "hash", "multihash", "float-ip", "float-l2"} | {
        "rerank-ip", "rerank-l2"  # Hamming then float re-ranking (bench.rerank), X = 2, 4, 10
    }  # fmt: skip
    flat = next(r for r in rows if r["kind"] == "flat")
    # exact flat CPU search returns ties by position: its mAP@10 is the stable one, recall 1
    assert flat["accuracy"]["map@10"] == pytest.approx(ref_stable_map(q, db, 16, k=10), abs=1e-12)
    assert flat["accuracy"]["knn-recall@10"] == 1.0
    assert flat["bytes_per_item"] >= 4  # 16 bits padded to 32
    for r in rows:
        assert r["qps"] > 0 and r["batch"]["runs"] == 1
        assert r["latency_p50_ms"] <= r["latency_p99_ms"]
    ivf = sorted((r for r in rows if r["kind"] == "ivf"), key=lambda r: r["sweep"]["nprobe"])
    assert [r["sweep"]["nprobe"] for r in ivf] == [
        p for p in (1, 2, 4, 8, 16, 32, 64) if p <= ivf[0]["params"]["nlist"]
    ]
    assert ivf[-1]["accuracy"]["knn-recall@10"] == 1.0  # every list probed: exact


def test_bench_skips_existing_report_unless_forced(bench_run):
    tmp, out, *_ = bench_run
    before = (out / "report.json").read_text()
    res = CliRunner().invoke(main, ["bench", str(tmp / "toy16.h5"), "--out", str(out), *FAST])
    assert res.exit_code == 0
    assert "already holds the report of these inputs" in res.output and "--force" in res.output
    assert (out / "report.json").read_text() == before


def test_bench_tiny_file_exact_tie_aware_and_skipped_ivf(tmp_path):
    q, db = make_codes(tmp_path / "tiny.h5", bits=3, nq=3, nb=7, classes=2, seed=4)
    out = tmp_path / "r"
    res = CliRunner().invoke(
        main,
        [
            "bench",
            str(tmp_path / "tiny.h5"),
            "--out",
            str(out),
            "--k",
            "1,3",
            "--index-types",
            "flat,ivf",
            *FAST,
        ],
    )
    assert res.exit_code == 0, res.output
    c = json.loads((out / "report.json").read_text())["codes"][0]
    h = c["quality"]["hamming"]
    assert h["tie-aware"]["map@all"] == pytest.approx(ref_tie_aware_map_exact(q, db, 3), abs=1e-12)
    assert h["stable"]["map@all"] == pytest.approx(ref_stable_map(q, db, 3), abs=1e-12)
    ivf = [r for r in c["throughput"]["rows"] if r["kind"] == "ivf"]
    assert len(ivf) == 1 and "39" in ivf[0]["skipped"]
    assert "skipped" in (out / "report.md").read_text()


def test_bench_without_labels_or_features_says_so(tmp_path):
    make_codes(tmp_path / "nolab.h5", labels=False, nb=120)
    make_codes(tmp_path / "nofeat.h5", features=False, multilabel=True, nb=120, bits=24)
    out = tmp_path / "r"
    res = CliRunner().invoke(
        main,
        [
            "bench",
            str(tmp_path / "nolab.h5"),
            str(tmp_path / "nofeat.h5"),
            "--out",
            str(out),
            "--index-types",
            "flat,hash",
            *FAST,
        ],
    )
    assert res.exit_code == 0, res.output
    assert "no labels" in res.output and "mAP" in res.output
    assert "no features" in res.output and "float baseline" in res.output
    rep = json.loads((out / "report.json").read_text())
    nolab, nofeat = rep["codes"]
    assert nolab["quality"] == {} and nolab["throughput"]["rows"]
    assert all("map@1" not in r["accuracy"] for r in nolab["throughput"]["rows"])
    assert nolab["throughput"]["rows"][0]["accuracy"]["knn-recall@10"] == 1.0
    assert nofeat["labels"] == "multi-hot" and "float-ip" not in nofeat["quality"]
    assert not any(r["backend"] == "float" for r in nofeat["throughput"]["rows"])
    assert (out / "map_vs_bits.png").is_file()
    assert "mAP@all against code length" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    "args, words",
    [
        (["missing.h5"], "no such file"),
        (["GOOD", "--k", "1,x"], "comma-separated"),
        (["GOOD", "--k", "0"], "positive"),
        (["GOOD", "--index-types", "flat,annoy"], "unknown index type"),
        (["GOOD", "--runs", "0"], "--runs"),
        (["GOOD", "--latency-queries", "-1"], "--latency-queries"),
        (["NOQUERY"], "no query split"),
    ],
)
def test_bench_bad_input_exit_2(tmp_path, args, words):
    make_codes(tmp_path / "good.h5", nb=50, nq=5)
    write_codes(
        tmp_path / "noquery.h5", make_codes_file(8, Split(codes=np.zeros((4, 1), np.uint8)))
    )
    subst = {"GOOD": str(tmp_path / "good.h5"), "NOQUERY": str(tmp_path / "noquery.h5")}
    argv = [subst.get(a, str(tmp_path / a) if a.endswith(".h5") else a) for a in args]
    res = CliRunner().invoke(main, ["bench", *argv, "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert words in res.output
    assert "Traceback" not in res.output


def test_bench_help():
    res = CliRunner().invoke(main, ["bench", "--help"])
    assert res.exit_code == 0 and "--index-types" in res.output and "--force" in res.output


# --- timing, plots, paper table ----------------------------------------------------------


def test_repeat_timer_warmup_runs_and_budget():
    calls = []
    t = RepeatTimer(warmup=2, runs=4)
    for i in t:
        calls.append(i)
    assert calls == [-1, -2, 0, 1, 2, 3] and len(t.times) == 4
    assert t.summary()["median_s"] == pytest.approx(float(np.median(t.times)))
    t = RepeatTimer(warmup=0, runs=100, max_seconds=0.0)
    assert len(list(t)) == 1 and len(t.times) == 1
    assert percentiles_ms([0.001] * 99 + [0.1]) == {
        "p50": pytest.approx(1.0),
        "p99": pytest.approx(1.99),
    }


def test_repeat_timer_keeps_a_long_warmup_as_a_timed_run():
    t = RepeatTimer(warmup=1, runs=5, max_seconds=0.02)
    for _ in t:
        time.sleep(0.015)  # longer than max_seconds / 2: start-up costs are noise
    assert len(t.times) == 2 and t.summary()["warmup"] == 0 and t.summary()["runs"] == 2


def test_bench_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    make_codes(tmp_path / "toy.h5", bits=16, nb=400)
    cmd = [sys.executable, "-m", "fghash", "bench", str(tmp_path / "toy.h5")]
    cmd += ["--out", str(tmp_path / "rep"), "--index-types", "flat,hnsw", *FAST]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = [ln.split("INFO: ", 1)[-1] for ln in res.stderr.splitlines() if "fghash bench [" in ln]
    phases = ["load", "hamming ranking", "float ranking", "index flat", "index hnsw"]
    phases += ["float search", "rerank", "plots and report"]
    n = len(phases)
    for i, name in enumerate(phases, 1):
        started = f"fghash bench [{i}/{n}] {name}: started, about "
        assert any(ln.startswith(started) and ln.endswith(" left)") for ln in lines), name
        done = [ln for ln in lines if ln.startswith(f"fghash bench [{i}/{n}] {name}: ")]
        assert any("(elapsed " in ln and "left)" in ln for ln in done), name
    assert lines[-1].endswith("about 0.0 s left)")


def test_bench_hnsw_on_the_items_its_build_budget_allows(tmp_path):
    from bench.throughput import measure_binary
    from fghash.eval.ranking import rank_hamming

    rng = np.random.default_rng(0)
    xb = rng.integers(0, 256, (25_000, 2), dtype=np.uint8)
    xq = rng.integers(0, 256, (30, 2), dtype=np.uint8)
    dl, ql = rng.integers(0, 5, 25_000), rng.integers(0, 5, 30)
    counts = rank_hamming(xq, xb, 16, stable=False).n
    rows = measure_binary(
        xb, xq, 16, ["hnsw"], [10], exact_counts=counts, qlabels=ql, dblabels=dl,
        runs=1, warmup=0, latency_queries=2, hnsw_budget_s=1e-6, progress=False,
    )  # fmt: skip
    assert rows and all(
        r["sample"] == {"items": 10_000, "of": 25_000, "build_budget_s": 1e-6} for r in rows
    )
    assert all(r["bytes_per_item"] * 10_000 == pytest.approx(r["index_bytes"]) for r in rows)
    # exact k-NN over the first 10,000 items: a high-ef HNSW search finds (ties counted) all
    assert rows[-1]["accuracy"]["knn-recall@10"] > 0.95


def test_bench_map_speed_runs_and_its_naive_evaluator_is_right(capsys):
    from bench.scripts.bench_map_speed import main as map_speed
    from bench.scripts.bench_map_speed import naive_metrics

    out = map_speed(["--nq", "60", "--nb", "500", "--classes", "5", "--naive-queries", "0"])
    assert out["fghash"]["warnings"] == [] and out["naive"]["queries_timed"] == 60
    assert out["naive"]["speedup_cpu"] > 0 and '"speedup_cpu"' in capsys.readouterr().out
    # hand-worked, without ties: one query, database codes at distances 4, 0, 1, 2, 3
    q = pack_bits(np.zeros((1, 4), dtype=np.uint8))
    db = pack_bits(np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]]))
    res = naive_metrics(q, db, np.array([1]), np.array([1, 0, 1, 0, 1]), ks=(2,))
    # ranking by distance: positions 1, 2, 3, 4, 0 -> relevance 0 1 0 1 1
    assert res["map@all"] == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 3)
    assert res["map@2"] == pytest.approx(1 / 2) and res["p@2"] == 0.5 and res["r@2"] == 1 / 3


def test_pareto_frontier():
    #       recall  qps
    pts = [(0.5, 1000), (0.9, 100), (0.8, 50), (1.0, 10), (0.9, 200), (0.4, 900)]
    xs, ys = zip(*pts, strict=True)
    assert pareto_frontier(xs, ys) == [3, 4, 0]
    # lower x is better (e.g. latency): (0.4, 900) beats nothing faster; (0.5, 1000) ...
    assert pareto_frontier(xs, ys, x_worst=float("inf")) == [5, 0]


def test_paper_table_layout_and_values(tmp_path, capsys):
    run = tmp_path / "run-a2net-12"
    run.mkdir()
    qa, dba = make_codes(run / "codes.h5", bits=12, method="a2net", dataset="CUB200-2011", seed=1)
    qb, dbb = make_codes(
        tmp_path / "itq24.h5", bits=24, method="itq", dataset="CUB200-2011", seed=2
    )
    qc, dbc = make_codes(
        tmp_path / "itq12.h5", bits=12, method="itq", dataset="CUB200-2011", seed=3
    )
    out = tmp_path / "t"
    rc = paper_main(
        [
            str(run),
            str(tmp_path / "itq24.h5"),
            str(tmp_path / "itq12.h5"),
            "--out",
            str(out),
            "--ties",
            "stable",
        ]
    )
    assert rc == 0
    doc = json.loads((out / "paper_table.json").read_text())
    assert (
        doc["command"].startswith("python -m bench.scripts.paper_table")
        and "--ties stable" in doc["command"]
    )
    table = doc["table"]
    assert table["columns"] == ["a2net", "itq"]
    assert [(r["dataset"], r["bits"]) for r in table["rows"]] == [
        ("CUB200-2011", 12),
        ("CUB200-2011", 24),
    ]
    want12 = {"a2net": ref_stable_map(qa, dba, 12), "itq": ref_stable_map(qc, dbc, 12)}
    for m, v in table["rows"][0]["values"].items():
        assert v == pytest.approx(100 * want12[m], abs=1e-9)
    assert table["rows"][1]["values"] == {
        "itq": pytest.approx(100 * ref_stable_map(qb, dbb, 24), abs=1e-9)
    }
    md = (out / "paper_table.md").read_text()
    assert "| CUB200-2011 | 12 |" in md and "|  | 24 | – |" in md and "**" in md
    # duplicate (data set, method, bits) is refused with one sentence
    rc = paper_main([str(tmp_path / "itq12.h5"), str(tmp_path / "itq12.h5"), "--out", str(out)])
    assert rc == 2 and "both give" in capsys.readouterr().err
