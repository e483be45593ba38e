"""``bench/scripts/bench_train.py`` runs the real loop and the step ceiling and prints both."""

from __future__ import annotations

import json

import pytest

from bench.scripts.bench_train import main

pytestmark = pytest.mark.slow


def test_prints_loop_and_ceiling_for_each_model(tmp_path, capsys):
    argv = ["--backbone", "resnet18", "--image-size", "32", "--steps", "1", "--batch-size", "4"]
    argv += [
        "--models",
        "a2net_efficient",
        "--bits",
        "8",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "a2net_efficient" in out and "loop/ceiling" in out
    (row,) = json.loads((tmp_path / "results.json").read_text())["results"]
    assert row["loop"] > 0 and row["ceiling"] > 0
    # the loop really trained: a run folder with its checkpoint and two epochs per iteration
    records = (tmp_path / "runs" / "a2net_efficient-8" / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 4
    assert main([*argv[:-2], "--bits", "x"]) == 2
