"""The model step benchmark runs on tiny inputs and counts what the networks hold."""

from __future__ import annotations

import pytest
import torchvision

from bench.scripts.bench_models import main


def test_bench_models_times_each_model(capsys):
    rows = main(["--backbone", "resnet18", "--image-size", "32", "--bits", "4", "--runs", "1"])
    assert [r["model"] for r in rows] == ["a2net", "a2net_efficient", "adsh"]
    assert all(r["seconds"] > 0 for r in rows)
    # The faithful A²-Net holds one more layer4 (the local branch's φ) than the efficient one.
    layer4 = sum(p.numel() for p in torchvision.models.resnet18().layer4.parameters()) / 1e6
    extra = rows[0]["params_m"] - rows[1]["params_m"]
    assert extra == pytest.approx(layer4, rel=0.02)
    assert "a2net_efficient" in capsys.readouterr().out
