"""``fghash demo``: the whole chain on the synthetic set, checked against brute force."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fghash.cli import main
from fghash.demo import DemoConfig

QUICK = ["demo", "--quick", "--device", "cpu"]


def _run(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def _number(output: str, row: str) -> float:
    m = re.search(rf"^\s*{re.escape(row)}\s+([0-9.]+)", output, re.MULTILINE)
    assert m, (row, output)
    return float(m.group(1))


def _bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """0/1 [N, bits] from schema-v1 packed codes, written out by hand."""
    out = np.zeros((codes.shape[0], bits), dtype=np.int64)
    for i in range(bits):
        out[:, i] = (codes[:, i // 8].astype(np.int64) >> (i % 8)) & 1
    return out


def _expected_ap(dist: np.ndarray, rel: np.ndarray) -> float:
    """AP@all averaged over every order within ties, one query, by direct summation.

    A relevant item in a tie group of ``n`` items (``c`` items and ``rc`` relevant ones in
    closer groups, ``r`` relevant in its group) sits at position ``y`` of the group with
    probability 1/n; then ``y (r-1)/(n-1)`` relevant items precede it in the group on average.
    """
    R = int(rel.sum())
    if R == 0:
        return 0.0
    total = 0.0
    for d in np.unique(dist):
        group = dist == d
        c, rc = int((dist < d).sum()), int(rel[dist < d].sum())
        n, r = int(group.sum()), int(rel[group].sum())
        for _ in range(r):
            ys = np.arange(n)
            before = ys * (r - 1) / (n - 1) if n > 1 else np.zeros(1)
            total += float(np.mean((rc + 1 + before) / (c + 1 + ys)))
    return total / R


def _stable_ap(order: np.ndarray, rel: np.ndarray) -> float:
    hits = rel[order]
    if not hits.any():
        return 0.0
    ranks = np.flatnonzero(hits) + 1
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks))


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "fghash-demo"
    before = torch.get_num_threads()
    try:
        r = _run(*QUICK, "--out", out, "--threads", 1)
        assert r.exit_code == 0, r.output
        assert torch.get_num_threads() == 1  # --threads reached torch in this process
    finally:
        torch.set_num_threads(before)
    return out, r.stdout


def test_quick_demo_prints_its_phase_times_and_total(quick_demo: tuple[Path, str]) -> None:
    _, text = quick_demo
    assert "time, 1 CPU thread(s), torch " in text
    assert "1 FAISS thread(s)" in text
    phases = ("data", "training", "encoding", "index", "search", "eval")
    seconds = {}
    for name in (*phases, "total"):
        m = re.search(rf"^\s+{name}\s+([0-9.]+) s$", text, re.MULTILINE)
        assert m, (name, text)
        seconds[name] = float(m.group(1))
    assert abs(sum(seconds[p] for p in phases) - seconds["total"]) <= 0.05 * len(phases)


def test_quick_demo_writes_everything_and_says_what_next(quick_demo: tuple[Path, str]) -> None:
    out, text = quick_demo
    for rel in ("demo.json", "data/manifest.json", "run/config.json", "codes.h5"):
        assert (out / rel).is_file(), rel
    for rel in ("index/index.faiss", "index/items.h5", "index/index.json"):
        assert (out / rel).is_file(), rel
    meta = json.loads((out / "index" / "index.json").read_text())
    assert meta["ntotal"] == 4 * 8 and meta["bits"] == 12
    assert "[1/3]" in text and "[2/3] training a2net" in text and "[3/3] encoding" in text
    assert "query 1:" in text and "rank" in text  # the searches
    assert f"fghash search {out / 'index'} --codes {out / 'codes.h5'}" in text
    assert f"fghash bench {out / 'codes.h5'}" in text
    assert "queries/s" in text and "binary / float" in text


def test_printed_maps_equal_brute_force_from_the_codes_file(quick_demo: tuple[Path, str]) -> None:
    out, text = quick_demo
    with h5py.File(out / "codes.h5") as f:
        bits = int(f.attrs["bits"])
        q = _bits(f["query/codes"][()], bits)
        db = _bits(f["database/codes"][()], bits)
        ql, dl = f["query/labels"][()], f["database/labels"][()]
        fq, fd = f["query/features"][()], f["database/features"][()]
    assert len(q) == 4 * 4 and len(db) == 4 * 8
    ham = (q[:, None, :] != db[None, :, :]).sum(axis=2)
    rel = ql[:, None] == dl[None, :]
    tie_aware = np.mean([_expected_ap(ham[i], rel[i]) for i in range(len(q))])
    stable = np.mean([_stable_ap(np.argsort(ham[i], kind="stable"), rel[i]) for i in range(len(q))])
    scores = fq.astype(np.float64) @ fd.astype(np.float64).T
    flt = np.mean(
        [_stable_ap(np.argsort(-scores[i], kind="stable"), rel[i]) for i in range(len(q))]
    )
    chance = np.mean([_expected_ap(np.zeros(len(db)), rel[i]) for i in range(len(q))])

    assert _number(text, "learned 12-bit codes") == pytest.approx(tie_aware, abs=6e-5)
    assert f"stable ties: {stable:.4f}" in text
    assert _number(text, "exact float search") == pytest.approx(flt, abs=6e-5)
    assert _number(text, "chance") == pytest.approx(chance, abs=6e-5)


def test_rerun_reuses_other_settings_need_force(quick_demo: tuple[Path, str]) -> None:
    out, first = quick_demo
    ckpt = out / "run" / "checkpoints" / "last.pt"
    before = ckpt.stat().st_mtime_ns
    again = _run(*QUICK, "--out", out)
    assert again.exit_code == 0, again.output
    assert "reusing the finished run" in again.stdout
    assert ckpt.stat().st_mtime_ns == before
    assert _number(again.stdout, "learned 12-bit codes") == _number(first, "learned 12-bit codes")

    other = _run(*QUICK, "--out", out, "--seed", "1")
    assert other.exit_code == 2
    assert "other settings (seed)" in other.output and "--force" in other.output
    assert ckpt.stat().st_mtime_ns == before

    forced = _run(*QUICK, "--out", out, "--seed", "1", "--force")
    assert forced.exit_code == 0, forced.output
    assert "[2/3] training" in forced.stdout
    assert json.loads((out / "demo.json").read_text())["seed"] == 1
    assert json.loads((out / "data" / "manifest.json").read_text())["params"]["seed"] == 1


def test_refuses_a_folder_that_is_not_a_demo(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    r = _run(*QUICK, "--out", tmp_path)
    assert r.exit_code == 2 and "holds no fghash demo" in r.output
    assert "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_demo_config_resolves_to_a_valid_training_config(tmp_path: Path) -> None:
    cfg = DemoConfig().train_config(tmp_path)
    assert (cfg.dataset, cfg.backbone, cfg.weights, cfg.bits) == ("synthetic", "resnet18", None, 12)
    assert cfg.soft_similarity and cfg.data_root == str(tmp_path.resolve())
    assert DemoConfig.quick(max_iter=3).replace(epochs=2, lr=None).max_iter == 3


def test_encode_applies_threads(quick_demo: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = quick_demo
    before = torch.get_num_threads()
    try:
        r = _run("encode", out / "run", "--out", tmp_path / "c.h5", "--threads", 1)
        assert r.exit_code == 0, r.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert (tmp_path / "c.h5").is_file()
