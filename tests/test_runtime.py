"""``fghash.util.threads``: the OpenMP wait policy set early, ``--threads`` applied."""

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

from fghash.cli import main
from fghash.errors import FghashError
from fghash.util import threads as runtime

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

    def fake_train_runs(*args: Any, **kwargs: Any) -> list[Any]:
        seen.append(torch.get_num_threads())
        return []

    monkeypatch.setattr("fghash.ops.learning.train_runs", fake_train_runs)
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


@pytest.fixture
def no_follower(keep_threads: int) -> Iterator[None]:
    """Leave no load follower behind for later tests in this process."""
    yield
    runtime._follower = None


def test_busy_seconds_sums_the_busy_fields_of_the_chosen_cores(tmp_path: Path) -> None:
    tick = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    stat.write_text(
        # name user nice system idle iowait irq softirq steal guest guest_nice
        "cpu  999 999 999 999 999 999 999 999 0 0\n"
        "cpu0 100 1 20 5000 7 3 2 10 0 0\n"
        "cpu1 200 0 40 4000 9 0 6 0 0 0\n"
        "cpu2 7 7 7 7 7 7 7 7 0 0\n"
        "intr 12345 0 0\n"
    )
    # busy = user + nice + system + irq + softirq + steal; idle and iowait are not
    assert runtime.busy_seconds([0], stat) == pytest.approx(136 / tick)
    assert runtime.busy_seconds([0, 1], stat) == pytest.approx((136 + 246) / tick)
    assert runtime.busy_seconds([1, 5], stat) == pytest.approx(246 / tick)
    assert runtime.busy_seconds([0], tmp_path / "missing") is None


class _Machine:
    """A 2-core machine whose other processes use ``others`` cores; this process
    keeps every core it has threads for busy."""

    def __init__(self) -> None:
        self.t = self.busy = self.own = 0.0
        self.others = 0.0
        self.threads = 2
        self.applied: list[int] = []

    def run(self, seconds: float) -> None:
        mine = min(self.threads, 2 - self.others) if self.others < 2 else 0.0
        self.t += seconds
        self.own += mine * seconds
        self.busy += (mine + self.others) * seconds

    def apply(self, n: int) -> None:
        self.threads = n
        self.applied.append(n)

    def follower(self) -> runtime.LoadFollower:
        return runtime.LoadFollower(
            [0, 1],
            2,
            interval=2.0,
            busy=lambda cores: self.busy,
            own=lambda: self.own,
            clock=lambda: self.t,
            apply=self.apply,
        )


def test_load_follower_uses_the_cores_other_processes_leave_free() -> None:
    m = _Machine()
    m.others = 1.0  # one busy process from the start: the first measurement acts at once
    f = m.follower()
    m.run(0.3)
    assert f.poll() is None  # not even the first interval has passed: nothing measured
    m.run(0.7)
    assert f.poll() == 1 and m.threads == 1
    for _ in range(3):  # it keeps its core: one thread stays
        m.run(2.0)
        assert f.poll() is None and m.threads == 1
    m.others = 0.0  # it ended: two measurements in a row agree, then two threads again
    m.run(2.0)
    assert f.poll() is None and m.threads == 1
    m.run(2.0)
    assert f.poll() == 2 and m.threads == 2
    m.others = 0.8  # a burst of one measurement changes nothing
    m.run(2.0)
    assert f.poll() is None
    m.others = 0.0
    m.run(2.0)
    assert f.poll() is None and m.applied == [1, 2]
    m.others = 0.4  # a light load (round(2 - 0.4) = 2) keeps both threads
    for _ in range(3):
        m.run(2.0)
        assert f.poll() is None
    m.others = 2.0  # the machine is full: never below one thread
    for _ in range(2):
        m.run(2.0)
        f.poll()
    assert m.threads == 1
    assert f.summary() == "1-2 (1 for 10 s, 2 for 15 s; following the load)"


def test_load_follower_ignores_this_process_own_cpu_time() -> None:
    m = _Machine()
    f = m.follower()
    for _ in range(4):  # this process alone, both cores busy: two threads throughout
        m.run(2.0)
        assert f.poll() is None
    assert m.applied == [] and f.summary() == "2"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="needs Linux /proc")
def test_load_follower_sees_a_busy_process_on_its_cores() -> None:
    cores = sorted(os.sched_getaffinity(0))
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        f = runtime.LoadFollower(cores, len(cores), apply=lambda n: None)
        before = _cpu_seconds(busy.pid)
        t0 = time.monotonic()
        time.sleep(1.5)
        others = f.others()
        child = (_cpu_seconds(busy.pid) - before) / (time.monotonic() - t0)
    finally:
        busy.kill()
        busy.wait()
    assert others is not None
    # everything the child used (from its own /proc entry) counts as another process's
    assert child > 0.3
    assert others >= 0.8 * child - 0.05


def test_set_threads_follows_the_load_only_when_nobody_fixed_the_count(
    monkeypatch: pytest.MonkeyPatch, no_follower: None
) -> None:
    monkeypatch.setattr(runtime, "_usable_cores", lambda: [0, 1])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert runtime.set_threads(None) == 2
    assert isinstance(runtime._follower, runtime.LoadFollower)
    assert runtime.set_threads(1) == 1 and runtime._follower is None
    assert runtime.thread_summary() == "1" and runtime.adapt_threads() is None
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert runtime.set_threads(None) == 2 and runtime._follower is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(runtime, "_usable_cores", lambda: [0])
    assert runtime.set_threads(None) == 1 and runtime._follower is None


def test_training_steps_let_the_thread_count_follow_the_load(
    tmp_path: Path, no_follower: None, caplog: pytest.LogCaptureFixture
) -> None:
    from fghash.data import generate_synthetic
    from fghash.runs.config import resolve_config
    from fghash.training.loop import train

    root = generate_synthetic(
        tmp_path / "d", num_classes=2, train_per_class=4, test_per_class=1, image_size=32
    )
    # another process keeps one of two cores busy: its busy time grows with the clock,
    # this process's own CPU time stays 0; every reading of the clock is 3 s later
    now = [0.0]

    def clock() -> float:
        now[0] += 3.0
        return now[0]

    seen: list[int] = []
    f = runtime.LoadFollower(
        [0, 1],
        2,
        busy=lambda cores: now[0],
        own=lambda: 0.0,
        clock=clock,
        apply=lambda n: (seen.append(n), torch.set_num_threads(n)),
    )
    runtime._follower = f
    cfg = resolve_config(
        "synthetic",
        None,
        data_root=str(root),
        backbone="resnet18",
        image_size=32,
        bits=8,
        num_samples=8,
        batch_size=4,
        max_iter=1,
        epochs=1,
        device="cpu",
        weights="none",
        gamma=1.0,
        lr=1e-3,
    )
    with caplog.at_level("INFO", logger="fghash.training.loop"):
        train(cfg, tmp_path / "run", progress=False)
    assert seen == [1] and torch.get_num_threads() == 1
    assert "1 compute thread(s) now" in caplog.text
