"""Smoke test of bench/scripts/bench_padding.py on a tiny database (the figures are not checked)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("faiss")

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "scripts" / "bench_padding.py"


def test_bench_padding_runs_and_distances_agree(capsys) -> None:
    spec = importlib.util.spec_from_file_location("bench_padding", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main(
        ["--n", "500", "--nq", "20", "--runs", "2", "--threads", "1", "--float-dim", "16"]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "distances identical: yes" in out
    assert "padded to 64" in out and "IndexFlatIP" in out and "threads=1" in out
