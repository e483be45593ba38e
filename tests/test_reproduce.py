"""bench/scripts/reproduce_tables.py end to end on a tiny synthetic set, against brute-force mAP.

The script runs real ``python -m fghash train/encode/baseline`` subprocesses; the test
re-reads the codes files they wrote and recomputes every table entry independently.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.scripts.reproduce_tables import main
from fghash.data import generate_synthetic

BITS = (8, 12)


def _read(path):
    out = {}
    with h5py.File(path, "r") as f:
        bits = int(f.attrs["bits"])
        for split in ("query", "database"):
            g = f[split]
            packed = g["codes"][()]
            # bit i of an item is (byte i >> 3) >> (i & 7) & 1 (schema v1), written out longhand
            b = np.array(
                [[(row[i // 8] >> (i % 8)) & 1 for i in range(bits)] for row in packed],
                dtype=np.int64,
            )
            out[split] = (b, g["labels"][()], g["features"][()].astype(np.float64))
    return bits, out


def _ap(order_labels, label):
    rel = order_labels == label
    hits = np.cumsum(rel)
    ranks = np.flatnonzero(rel) + 1
    return float(np.mean(hits[rel] / ranks)) if rel.any() else 0.0


def brute_map_stable(path):
    """Hamming ranking, ties by database position (a stable sort of the distances)."""
    _, d = _read(path)
    (qb, ql, _), (db, dl, _) = d["query"], d["database"]
    aps = []
    for code, label in zip(qb, ql, strict=True):
        dist = np.abs(db - code).sum(axis=1)
        aps.append(_ap(dl[np.argsort(dist, kind="stable")], label))
    return float(np.mean(aps))


def brute_map_tie_aware(path, draws=4000, seed=0):
    """Expected AP over random orders within equal Hamming distances (Monte Carlo)."""
    rng = np.random.default_rng(seed)
    _, d = _read(path)
    (qb, ql, _), (db, dl, _) = d["query"], d["database"]
    total = 0.0
    for code, label in zip(qb, ql, strict=True):
        dist = np.abs(db - code).sum(axis=1)
        acc = 0.0
        for _ in range(draws):
            order = np.lexsort((rng.random(len(dist)), dist))
            acc += _ap(dl[order], label)
        total += acc / draws
    return total / len(qb)


def brute_map_float(path):
    """Exact inner-product ranking over the stored features, ties by database position."""
    _, d = _read(path)
    (_, ql, qf), (_, dl, df) = d["query"], d["database"]
    return float(
        np.mean(
            [
                _ap(dl[np.argsort(-(df @ x), kind="stable")], label)
                for x, label in zip(qf, ql, strict=True)
            ]
        )
    )


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    base = tmp_path_factory.mktemp("repro")
    root = generate_synthetic(
        base / "birds", num_classes=3, train_per_class=4, test_per_class=2, image_size=32
    )
    out = base / "tables"
    argv = [
        "--dataset", "synthetic", "--data-root", str(root), "--out", str(out),
        "--bits", ",".join(map(str, BITS)), "--methods", "adsh,a2net,lsh,float",
        "--ablation", "adsh,+decorrelation", "--device", "cpu", "--ties", "stable",
        "--train-args",
        "--weights none --backbone resnet18 --image-size 32 --max-iter 1 --epochs 1 "
        "--num-samples 8 --batch-size 4",
    ]  # fmt: skip
    assert main(argv) == 0
    return out, argv


def test_tables_equal_brute_force_map(made):
    out, argv = made
    t1 = json.loads((out / "table1.json").read_text())
    t2 = json.loads((out / "table2.json").read_text())
    want = {}
    for e in t1["entries"]:
        assert (out / "codes").resolve() in Path(e["path"]).resolve().parents
        ref = brute_map_float(e["path"]) if e["key"] == "float" else brute_map_stable(e["path"])
        assert e["map"] == pytest.approx(ref, abs=1e-12), e
        want[(e["key"], e["bits"])] = ref
    assert set(want) == {(m, b) for m in ("adsh", "a2net", "lsh", "float") for b in BITS}
    # the float column searches the A²-Net run's relaxed codes; the shallow one its own file
    paths = {(e["key"], e["bits"]): e["path"] for e in t1["entries"]}
    assert paths[("float", 8)] == paths[("a2net", 8)]
    assert paths[("lsh", 8)].endswith("lsh-8.h5")
    table = t1["table_data"]
    assert table["columns"] == ["ADSH", "A²-Net", "LSH", "float (relaxed features)"]
    labels = {"adsh": "ADSH", "a2net": "A²-Net", "lsh": "LSH", "float": "float (relaxed features)"}
    for row in table["rows"]:
        for key, label in labels.items():
            assert row["values"][label] == pytest.approx(100 * want[(key, row["bits"])])
    # Table 2: rows are the ablation steps, columns the code lengths; runs are shared
    assert [r["method"] for r in t2["table_data"]["rows"]] == ["ADSH", "+ decorrelation (A²-Net)"]
    assert t2["table_data"]["columns"] == list(BITS)
    for row in t2["table_data"]["rows"]:
        key = "adsh" if row["method"] == "ADSH" else "a2net"
        for b in BITS:
            assert row["values"][str(b)] == pytest.approx(100 * want[(key, b)])
    md1, md2 = (out / "table1.md").read_text(), (out / "table2.md").read_text()
    for md in (md1, md2):
        assert "not the paper's published numbers" in md
        assert (
            "python -m bench.scripts.reproduce_tables" in md
            and "--ablation adsh,+decorrelation" in md
        )
        assert "`synthetic`" in md and "--max-iter 1" in md
    a2 = f"{100 * want[('a2net', 12)]:.2f}"
    assert "| synthetic | 8 |" in md1 and a2 in md1.split("|  | 12 |")[1].splitlines()[0]
    assert "| 8 bits | 12 bits |" in md2
    # Table 2 adds each row's attribute awareness (the synthetic set has attributes),
    # here against a direct pairwise count of the AUCs over the relaxed database codes
    aw = t2["awareness"]
    assert [r["name"] for r in aw] == [
        f"{m}, {b} bits" for m in ("ADSH", "+ decorrelation (A²-Net)") for b in BITS
    ]
    assert "### Attribute awareness" in md2 and "| ADSH, 8 bits | relaxed values |" in md2
    for r in aw:
        with h5py.File(r["codes"], "r") as f:
            x, a = f["database/features"][()], f["database/attributes"][()]
        best = []
        for k in range(x.shape[1]):
            devs = []
            for j in range(a.shape[1]):
                pos, neg = x[a[:, j] == 1, k], x[a[:, j] == 0, k]
                if len(pos) and len(neg):
                    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
                    devs.append(abs(wins / (len(pos) * len(neg)) - 0.5))
            best.append(max(devs))
        assert r["per_bit"] == pytest.approx(np.mean(best), abs=1e-9)
        assert r["null"]["rotations"] == 20
    # one log per step, each made by `python -m fghash ...`
    logs = sorted(p.name for p in (out / "logs").iterdir())
    assert "train-a2net-12.log" in logs and "baseline-lsh-8.log" in logs
    assert "$ python -m fghash train" in (out / "logs" / "train-a2net-12.log").read_text()


def test_rerun_skips_every_step_and_rescoring_follows_ties(made):
    out, argv = made
    before = {p.name: p.read_text() for p in (out / "logs").iterdir()}
    argv = [a if a != "stable" else "tie-aware" for a in argv]
    assert main(argv) == 0
    after = {p.name: p.read_text() for p in (out / "logs").iterdir()}
    assert after == before  # no step ran again
    t1 = json.loads((out / "table1.json").read_text())
    assert all(s["skipped"] for s in t1["steps"])
    e = next(e for e in t1["entries"] if e["key"] == "adsh" and e["bits"] == 8)
    assert e["ties"] == "tie-aware"
    assert e["map"] == pytest.approx(brute_map_tie_aware(e["path"]), abs=0.01)


def test_changed_options_into_the_same_folder_are_refused(made, capsys):
    out, argv = made
    argv = [a.replace("--num-samples 8", "--num-samples 9") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "--force" in err and err.count("\n") == 1


def test_bad_method_name_exits_2_with_one_sentence(tmp_path, capsys):
    out = tmp_path / "never"
    rc = main(
        ["--dataset", "synthetic", "--data-root", str(tmp_path), "--out", str(out),
         "--methods", "a2net,ithq"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "unknown method 'ithq' in --methods" in err
    assert not out.exists()
    assert (
        main(["--dataset", "x", "--data-root", ".", "--out", str(out), "--ablation", "+foo"]) == 2
    )
    assert "unknown ablation row '+foo'" in capsys.readouterr().err
