"""bench/gpu_check.py: every section runs in its tiny CPU mode, the report is written as it
goes, and a failing section is recorded without stopping the others."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from bench import gpu_check

ROOT = Path(__file__).resolve().parents[1]


def test_sections_are_the_built_in_ones_then_the_helpers():
    names = gpu_check.section_names()
    assert names[: len(gpu_check.BUILT_IN)] == list(gpu_check.BUILT_IN)
    extra = sorted(
        p.stem
        for p in (ROOT / "bench" / "gpu_checks").glob("*.py")
        if not p.stem.startswith("_") and p.stem not in gpu_check.BUILT_IN
    )
    assert names[len(gpu_check.BUILT_IN) :] == extra


def test_a_failing_section_is_recorded_and_the_next_one_runs(tmp_path, monkeypatch):
    boom = types.ModuleType("bench.gpu_checks.boom")

    def check(tiny, device):
        raise ValueError("no GPU here")

    boom.check = check
    monkeypatch.setitem(sys.modules, "bench.gpu_checks.boom", boom)
    monkeypatch.setattr(gpu_check, "section_names", lambda: ["boom", "versions"])
    out = tmp_path / "r.json"
    report = gpu_check.main(["--tiny", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report, default=str))
    assert saved["sections"]["boom"]["status"] == "error"
    assert "ValueError: no GPU here" in saved["sections"]["boom"]["error"]
    assert saved["sections"]["versions"]["status"] == "ok"
    assert saved["sections"]["versions"]["torch"]
    assert saved["failed"] == ["boom"]


@pytest.mark.slow
def test_tiny_mode_runs_every_section_from_the_repository_root(tmp_path):
    out = tmp_path / "gpu_check.json"
    r = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--tiny", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(out.read_text())
    sections = report["sections"]
    assert list(sections) == gpu_check.section_names()
    assert {n: s["status"] for n, s in sections.items()} == dict.fromkeys(sections, "ok"), r.stdout
    assert r.returncode == 0 and report["failed"] == []
    # the CPU legs are exact: same arithmetic on both sides of the interruption
    assert sections["resume"]["resumed_same_device_equal"]
    assert sections["resume"]["resumed_on_cpu_equal"]
    assert sections["resume"]["started_on_cpu_resumed_on_device_bits_agree"] == 1.0
    assert sections["search"]["exact_vs_brute_force"]
    assert sections["search"]["notes"]  # why there are no GpuIndexBinaryFlat rows
    for model in ("a2net", "a2net_efficient"):
        assert sections["train_speed"]["models"][model]["ratio"] > 0
