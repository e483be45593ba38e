"""Every benchmark script in bench/scripts/ answers ``python -m bench.scripts.NAME --help``.

Each script is run the way ``python -m`` runs it (:func:`runpy.run_module` as
``__main__``, in this process to spare ten interpreter start-ups); its usage line must
name the ``python -m`` spelling, so the help a user reads is the command they can type.
"""

from __future__ import annotations

import pkgutil
import runpy
import sys
import warnings
from pathlib import Path

import pytest

SCRIPTS_DIR = Path(__file__).resolve().parents[1] / "bench" / "scripts"
SCRIPTS = (
    "bench_demo_seeds",
    "bench_encode",
    "bench_gpu_search",
    "bench_map_speed",
    "bench_milvus_server",
    "bench_models",
    "bench_padding",
    "bench_rerank",
    "bench_safety",
    "bench_serve",
    "bench_scale",
    "bench_scaling",
    "bench_train",
    "make_codes",
    "paper_table",
    "reproduce_tables",
)


def test_every_script_is_listed() -> None:
    found = {m.name for m in pkgutil.iter_modules([str(SCRIPTS_DIR)]) if not m.ispkg}
    assert found == set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_help(name: str, monkeypatch, capsys) -> None:
    module = f"bench.scripts.{name}"
    monkeypatch.setattr(sys, "argv", [str(SCRIPTS_DIR / f"{name}.py"), "--help"])
    with warnings.catch_warnings():
        # runpy warns when an earlier test already imported the module; harmless here
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.split()[:4] == ["usage:", "python", "-m", module]
    assert "--help" in out


def test_bench_safety_tiny(tmp_path: Path) -> None:
    """The figures docs/benchmarks.md quotes come from this script; a tiny run checks it
    measures what it says (every part no longer than the command it is part of)."""
    from bench.scripts.bench_safety import measure

    res = measure(3000, tmp_path, n_add=10, repeat=2)
    for what, parts in (
        ("search", ("tidy_ms", "snapshot_ms")),
        ("add", ("locks_ms", "journal_ms")),
    ):
        row = res[what]
        assert all(0 <= row[p] < row["whole_ms"] for p in parts), row
        assert 0 <= row["share_pct"] < 100


def test_bench_scaling_tiny(tmp_path: Path) -> None:
    """docs/scaling.md's tables come from this script: the model fitted at the smaller
    size predicts the larger one before it is measured, and the error is their ratio."""
    import json

    from bench.scripts.bench_scaling import main

    out = tmp_path / "s.json"
    common = ["--codes-dir", str(tmp_path), "--workdir", str(tmp_path), "--out", str(out)]
    common += ["--nq", "50", "--nprobe", "1,4", "--hnsw-max-n", "0"]
    main(["--sizes", "4000", "--predict", "8000", *common])
    doc = json.loads(out.read_text())
    predicted = doc["sizes"]["8000"]["predicted"]
    assert {r["kind"] for r in predicted} == {"flat", "ivf", "multihash"}
    assert "measured" not in doc["sizes"]["8000"]
    main(["--sizes", "8000", *common])
    entry = json.loads(out.read_text())["sizes"]["8000"]
    assert entry["predicted"] == predicted  # kept, not refitted at the larger size
    flat = next(r for r in entry["measured"]["rows"] if r["kind"] == "flat")
    assert flat["recall"] == 1.0 and flat["index_bytes"] >= 8 * 8000
    err = next(e for e in entry["error"] if e["kind"] == "flat")["error"]
    pred = next(r for r in predicted if r["kind"] == "flat")
    assert abs(err["qps_1"] - (flat["qps_1"] / pred["qps_1"] - 1)) < 1e-9
