"""Writer locks between real processes: refusal with one sentence, waiting, release on
kill -9 (:mod:`fghash.util.locks`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fghash.errors import FghashError
from fghash.util.locks import lock_path, writer_lock

ROOT = Path(__file__).resolve().parents[1]

HOLD = (
    "import sys, time\n"
    "from fghash.util.locks import writer_lock\n"
    "with writer_lock(sys.argv[1], wait=0, what='t'):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(float(sys.argv[2]))\n"
)


def _holder(target: Path, seconds: float) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(target), str(seconds)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_second_writer_stops_or_waits(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    child = _holder(target, 1.5)
    try:
        with pytest.raises(FghashError) as e, writer_lock(target, wait=0, what="t"):
            pass
        msg = str(e.value)
        assert f"{target} is being written by another fghash process (pid {child.pid})" in msg
        assert "--wait SECONDS" in msg and "\n" not in msg
        t0 = time.monotonic()
        with writer_lock(target, wait=5, what="t") as lock:
            assert time.monotonic() - t0 < 5
            assert child.wait(timeout=5) == 0  # it let go before we got the lock
            assert lock == lock_path(target)
            assert lock.read_text().strip() == str(os.getpid())
    finally:
        child.kill()
        child.wait(timeout=10)
    assert lock_path(target).exists()  # never deleted (see fghash.util.locks)


def test_kill_9_releases_the_lock(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    child = _holder(target, 60)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    with writer_lock(target, wait=0, what="t"):
        pass


def test_missing_folder_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(FghashError, match="does not exist"), writer_lock(tmp_path / "a" / "b"):
        pass
