"""``fghash.runtime``: the OpenMP wait policy set early, ``--threads`` applied."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from fghash import runtime
from fghash.cli import main
from fghash.errors import FghashError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def keep_threads() -> Iterator[int]:
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_spin_count_set_only_when_the_user_chose_no_wait_policy() -> None:
    env: dict[str, str] = {}
    assert runtime.prepare_environment(env) is True
    assert env == {"GOMP_SPINCOUNT": str(runtime.SPIN_COUNT)}
    for users in (
        {"OMP_WAIT_POLICY": "ACTIVE"},
        {"OMP_WAIT_POLICY": "passive"},
        {"GOMP_SPINCOUNT": "0"},
        {"GOMP_SPINCOUNT": "infinity"},
    ):
        env = dict(users)
        assert runtime.prepare_environment(env) is False
        assert env == users
    env = {"OMP_WAIT_POLICY": " "}  # blank is unset for libgomp too
    assert runtime.prepare_environment(env) is True
    assert env["GOMP_SPINCOUNT"] == str(runtime.SPIN_COUNT)


def _waiting_seen_by_the_cli(**users: str) -> str:
    """What the environment holds once the CLI module is loaded, before torch is."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(users)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    code = (
        "import os, sys\n"
        "import fghash.cli\n"
        "assert 'torch' not in sys.modules and 'faiss' not in sys.modules\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return r.stdout.strip()


def test_cli_bounds_the_spin_before_torch_loads_and_keeps_the_users_choice() -> None:
    assert _waiting_seen_by_the_cli() == f"None {runtime.SPIN_COUNT}"
    assert _waiting_seen_by_the_cli(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE None"
    assert _waiting_seen_by_the_cli(GOMP_SPINCOUNT="10") == "None 10"


def test_module_entry_point_goes_through_the_cli() -> None:
    # `python -m fghash` runs fghash/__main__.py, which must load fghash.cli (and so set
    # the policy) before anything imports torch.
    text = (ROOT / "fghash" / "__main__.py").read_text()
    assert text.lstrip().startswith("from fghash.cli import main")


def test_set_threads_applies_to_torch(keep_threads: int) -> None:
    assert runtime.set_threads(1) == 1
    assert torch.get_num_threads() == 1
    assert runtime.set_threads(None) == runtime.default_threads()
    assert torch.get_num_threads() == runtime.default_threads()


def test_default_threads_follow_the_users_omp_num_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runtime.default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    cores = runtime.default_threads()
    assert cores == len(os.sched_getaffinity(0))
    for unusable in ("0", "two", ""):
        monkeypatch.setenv("OMP_NUM_THREADS", unusable)
        assert runtime.default_threads() == cores


@pytest.mark.parametrize("bad", [0, -2, True, 1.5])
def test_set_threads_refuses_non_positive_counts(bad: Any) -> None:
    with pytest.raises(FghashError, match="--threads"):
        runtime.set_threads(bad)


@pytest.mark.parametrize("command", ["train", "encode", "demo"])
def test_threads_option_refuses_zero(command: str, tmp_path: Path) -> None:
    args = {
        "train": [
            "--dataset",
            "synthetic",
            "--data-root",
            str(tmp_path),
            "--out",
            str(tmp_path),
        ],
        "encode": [str(tmp_path), "--out", str(tmp_path / "c.h5")],
        "demo": ["--out", str(tmp_path / "d")],
    }[command]
    r = CliRunner().invoke(main, [command, *args, "--threads", "0"])
    assert r.exit_code == 2
    assert "--threads" in r.output
    assert not (tmp_path / "d").exists() and not (tmp_path / "c.h5").exists()


def test_train_threads_reach_torch_before_training(
    keep_threads: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []

    def fake_train_many(*args: Any, **kwargs: Any) -> list[Any]:
        seen.append(torch.get_num_threads())
        return []

    monkeypatch.setattr("fghash.train.train_many", fake_train_many)
    target = 2 if keep_threads == 1 else 1
    r = CliRunner().invoke(
        main,
        [
            "train",
            "--dataset",
            "synthetic",
            "--data-root",
            str(tmp_path),
            "--out",
            str(tmp_path),
        ]
        + ["--threads", str(target)],
    )
    assert r.exit_code == 0, r.output
    assert seen == [target]
