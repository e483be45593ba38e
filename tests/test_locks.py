"""Writer locks between real processes: refusal with one sentence, waiting, release on
kill -9 (:mod:`fghash.util.locks`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
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
    assert not lock_path(target).exists()  # the holder removes it as it lets go


def test_kill_9_releases_the_lock(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    child = _holder(target, 60)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert lock_path(target).exists()  # a killed holder leaves its (unlocked) file
    with writer_lock(target, wait=0, what="t"):
        pass
    assert not lock_path(target).exists()


COUNT = (
    "import sys\n"
    "from pathlib import Path\n"
    "from fghash.util.locks import writer_lock\n"
    "f = Path(sys.argv[1])\n"
    "for _ in range(int(sys.argv[2])):\n"
    "    with writer_lock(f, wait=60):\n"
    "        n = int(f.read_text())\n"
    "        f.write_text(str(n + 1))\n"
)


def test_writers_exclude_each_other_while_lock_files_come_and_go(tmp_path: Path) -> None:
    # read-increment-write under the lock in 4 processes: a lost increment would mean two
    # holders at once (the lock file is removed and re-created on every release)
    counter = tmp_path / "n"
    counter.write_text("0")
    procs = [
        subprocess.Popen([sys.executable, "-c", COUNT, str(counter), "40"], cwd=ROOT)
        for _ in range(4)
    ]
    try:
        assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    finally:
        for p in procs:
            p.kill()
    assert counter.read_text() == "160"
    assert not lock_path(counter).exists()


def test_missing_folder_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(FghashError, match="does not exist"), writer_lock(tmp_path / "a" / "b"):
        pass


def _codes_file(path: Path, n: int, first_id: int, seed: int, method: str = "itq"):
    from fghash.codes import Split, make_codes_file, pack_bits, write_codes

    rng = np.random.default_rng(seed)
    split = Split(
        codes=pack_bits(rng.integers(0, 2, size=(n, 20)).astype(bool)),
        ids=np.arange(first_id, first_id + n, dtype=np.int64),
        labels=rng.integers(0, 5, size=n),
        paths=[f"img/{first_id + i}.jpg" for i in range(n)],
    )
    write_codes(path, make_codes_file(20, split, method=method))
    return split


def _fghash(*args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fghash", *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_adds_all_land(tmp_path: Path) -> None:
    from fghash.codes import read_codes
    from index import load_index

    base = _codes_file(tmp_path / "c.h5", 200, 0, seed=0)
    build = _fghash("build-index", tmp_path / "c.h5", "-o", tmp_path / "b", "--device", "cpu")
    assert build.wait(timeout=120) == 0, build.stderr.read()
    news = [_codes_file(tmp_path / f"new{i}.h5", 25, 1000 * (i + 1), seed=i + 1) for i in range(4)]
    procs = [
        _fghash("add", tmp_path / "b", tmp_path / f"new{i}.h5", "--wait", 60) for i in range(4)
    ]
    try:
        codes = [p.wait(timeout=180) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert codes == [0, 0, 0, 0], [p.stderr.read() for p in procs]
    union_ids = np.concatenate([base.ids, *(s.ids for s in news)])
    cf = read_codes(tmp_path / "c.h5")["database"]
    assert sorted(cf.ids.tolist()) == sorted(union_ids.tolist())
    index, items = load_index(tmp_path / "b")
    assert sorted(int(i) for i in items.ids) == sorted(union_ids.tolist())
    # the index answers as a brute-force Hamming search over the union (distances compared)
    by_id = {int(i): c for s in (base, *news) for i, c in zip(s.ids, s.codes, strict=True)}
    q = base.codes[:5]
    D, _ = index.search(q, 10)
    bits = np.unpackbits(np.stack(list(by_id.values())), axis=1, bitorder="little")
    qb = np.unpackbits(q, axis=1, bitorder="little")
    brute = np.sort((qb[:, None, :] != bits[None, :, :]).sum(-1), axis=1)[:, :10]
    np.testing.assert_array_equal(D, brute)


def test_two_build_index_to_one_out_one_wins(tmp_path: Path) -> None:
    _codes_file(tmp_path / "c.h5", 200, 0, seed=0)
    procs = [
        _fghash("build-index", tmp_path / "c.h5", "-o", tmp_path / "b", "--device", "cpu")
        for _ in range(2)
    ]
    try:
        codes = sorted(p.wait(timeout=120) for p in procs)
    finally:
        for p in procs:
            p.kill()
    errors = [p.stderr.read() for p in procs]
    assert codes == [0, 2], errors
    assert any("already exists" in e or "being written" in e for e in errors)
    assert not any("Traceback" in e for e in errors)
