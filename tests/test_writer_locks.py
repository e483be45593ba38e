"""Every writer holds the writer lock of what it writes, in real processes (issue 20 item 1):
``encode``, ``baseline``, ``train``, ``bench`` and ``explain`` wait for a holder
(``--wait``, with a "waiting for" line) or stop with one sentence and exit 2 leaving the
holder's output as it was, check "exists / no --force" again once they hold the lock,
and a ``kill -9`` of ``bench`` or ``explain`` at a named step
(:mod:`fghash.util.faults`) neither blocks the rerun nor leaves a folder it takes for
complete. (``add`` and ``build-index``: tests/test_locks.py.)"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fghash.codes import Split, make_codes_file, read_codes, write_codes
from fghash.util.locks import lock_path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # seconds for any one command on a busy 2-core machine

TRAIN = ["--dataset", "synthetic", "--backbone", "resnet18", "--image-size", "32"]
TRAIN += ["--max-iter", "1", "--epochs", "1", "--num-samples", "8", "--weights", "none"]
TRAIN += ["--device", "cpu", "--num-workers", "0"]
ENCODE = ["--device", "cpu", "--num-workers", "0", "--features", "none"]
BENCH = ["--index-types", "flat", "--runs", "1", "--latency-queries", "1", "--device", "cpu"]
EXPLAIN = ["--device", "cpu", "--rotations", "2", "--num-queries", "1"]


def _env(kill_at: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FGHASH_KILL_AT"}
    if kill_at:
        env["FGHASH_KILL_AT"] = kill_at
    return env


def _start(*args: object, kill_at: str | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fghash", *map(str, args)],
        cwd=ROOT,
        env=_env(kill_at),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(*args: object, kill_at: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fghash", *map(str, args)],
        cwd=ROOT,
        env=_env(kill_at),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def _one_sentence_error(stderr: str, needle: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and needle in errors[0], stderr
    assert "Traceback" not in stderr, stderr


def _codes(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)

    def split(m: int, first: int) -> Split:
        return Split(
            codes=rng.integers(0, 256, (m, 2), dtype=np.uint8),
            ids=np.arange(first, first + m),
            labels=rng.integers(0, 4, m),
            features=rng.standard_normal((m, 8)).astype(np.float32),
            features_kind="relaxed_code",
        )

    return write_codes(path, make_codes_file(16, split(60, 0), split(8, 10_000), method="a2net"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny inputs and one finished output of every writer, made by the commands."""
    from fghash.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("writers")
    w = {"c0": _codes(root / "c0.h5", 0), "c1": _codes(root / "c1.h5", 1)}
    w["data"] = generate_synthetic(
        root / "data", num_classes=3, train_per_class=4, test_per_class=2, image_size=32
    )
    w["run"], w["encoded"] = root / "run", root / "encoded.h5"
    w["itq"], w["report"], w["explained"] = root / "itq.h5", root / "report", root / "explained"
    for args in (
        ["train", *TRAIN, "--data-root", w["data"], "--out", w["run"]],
        ["encode", w["run"], *ENCODE, "--out", w["encoded"]],
        ["baseline", "itq", "--features", w["c0"], "--bits", "8", "--out", w["itq"]],
        ["bench", w["c1"], *BENCH, "--out", w["report"]],
        ["explain", w["c1"], *EXPLAIN, "--out", w["explained"]],
    ):
        res = _run(*args)
        assert res.returncode == 0, res.stderr
    return w


# --- a holder of the lock, in another process -------------------------------------------

HOLD = """
import shutil, sys
from pathlib import Path
from fghash.util.locks import writer_lock
target, payload = Path(sys.argv[1]), sys.argv[2]
with writer_lock(target, wait=0, what="test holder"):
    print("held", flush=True)
    sys.stdin.readline()
    if payload != "-":  # write an output of its own before letting go
        if Path(payload).is_dir():
            shutil.copytree(payload, target)
        else:
            shutil.copyfile(payload, target)
"""


class Holder:
    """A process holding ``target``'s writer lock until :meth:`release`."""

    def __init__(self, target: Path, payload: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(target), str(payload or "-")],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.close()
        assert self.proc.wait(timeout=60) == 0

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)


def _wait_for_line(proc: subprocess.Popen, needle: str, timeout: float = TIMEOUT) -> list[str]:
    """Read ``proc``'s stderr until a line holding ``needle``; the lines read. The rest of
    stderr stays readable through the returned reader's queue (see :func:`_finish`)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    proc.lines = lines  # type: ignore[attr-defined]
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"no line with {needle!r}; stderr so far: {''.join(seen)}")


def _finish(proc: subprocess.Popen, seen: list[str]) -> tuple[int, str]:
    """Exit code and whole stderr of a process read by :func:`_wait_for_line`."""
    code = proc.wait(timeout=TIMEOUT)
    rest: list[str] = []
    while (line := proc.lines.get(timeout=30)) is not None:  # type: ignore[attr-defined]
        rest.append(line)
    return code, "".join(seen + rest)


# --- what a finished output looks like -----------------------------------------------


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(path: Path) -> dict[str, str]:
    if path.is_file():
        return {".": _sha256(path)}
    return {str(p.relative_to(path)): _sha256(p) for p in sorted(path.rglob("*")) if p.is_file()}


def _bench_complete(out: Path, inputs: list[Path]) -> None:
    report = json.loads((out / "report.json").read_text())
    assert report["format"] == "fghash.bench"
    assert sorted(c["checksum"] for c in report["codes"]) == sorted(map(_sha256, inputs))
    assert report["plots"] and all((out / p).is_file() for p in report["plots"])
    assert (out / "report.md").read_text().strip()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["report.json", "report.md", *report["plots"]]
    )


def _explain_complete(out: Path, codes: Path) -> None:
    doc = json.loads((out / "explain.json").read_text())
    assert doc["format"] == "fghash.explain" and doc["codes"] == str(codes)
    assert doc["figures"] and all((out / f).is_file() for f in doc["figures"])
    assert (out / "explain.md").read_text().strip()
    tops = {Path(f).parts[0] for f in doc["figures"]}
    assert sorted(p.name for p in out.iterdir()) == sorted({"explain.json", "explain.md", *tops})


def _codes_complete(path: Path, like: Path) -> None:
    got, want = read_codes(path), read_codes(like)
    assert got.bits == want.bits and sorted(got.splits) == sorted(want.splits)
    for name in want.splits:
        np.testing.assert_array_equal(got[name].codes, want[name].codes)
        np.testing.assert_array_equal(got[name].ids, want[name].ids)


def _run_complete(run: Path, like: Path) -> None:
    assert (run / "config.json").read_text() == (like / "config.json").read_text()
    assert (run / "checkpoints" / "last.pt").is_file()
    np.testing.assert_array_equal(
        np.load(run / "database_codes.npy"), np.load(like / "database_codes.npy")
    )


def _nothing_hidden(folder: Path) -> None:
    """No lock file, temporary, parts folder or marker is left in ``folder``."""
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


# --- each writer against a holder ------------------------------------------------------


@dataclass
class Writer:
    name: str
    args: Callable[[dict[str, Path], Path], list[object]]  # the command writing to out
    replace: str  # the option that replaces (or continues) an existing output
    first: str  # world's finished output of the same kind
    complete: Callable[[Path, dict[str, Path]], None]
    exists: str  # in the refusal of an existing output without `replace`


WRITERS = [
    Writer(
        "encode",
        lambda w, out: ["encode", w["run"], *ENCODE, "--out", out],
        "--force",
        "encoded",
        lambda out, w: _codes_complete(out, w["encoded"]),
        "already exists",
    ),
    Writer(
        "baseline",
        lambda w, out: ["baseline", "itq", "--features", w["c0"], "--bits", "8", "--out", out],
        "--force",
        "itq",
        lambda out, w: _codes_complete(out, w["itq"]),
        "already exists",
    ),
    Writer(
        "train",
        lambda w, out: ["train", *TRAIN, "--data-root", w["data"], "--out", out],
        "--resume",
        "run",
        lambda out, w: _run_complete(out, w["run"]),
        "already holds a trained run",
    ),
    Writer(
        "bench",
        lambda w, out: ["bench", w["c0"], *BENCH, "--out", out],
        "--force",
        "report",
        lambda out, w: _bench_complete(out, [w["c0"]]),
        "holds the report of other inputs",
    ),
    Writer(
        "explain",
        lambda w, out: ["explain", w["c0"], *EXPLAIN, "--out", out],
        "--force",
        "explained",
        lambda out, w: _explain_complete(out, w["c0"]),
        "already holds an explain report",
    ),
]


@pytest.mark.parametrize("writer", WRITERS, ids=lambda x: x.name)
def test_second_writer_stops_or_waits(writer: Writer, world: dict[str, Path], tmp_path) -> None:
    out = tmp_path / "out"
    first = world[writer.first]
    copy = shutil.copytree if first.is_dir() else shutil.copyfile
    copy(first, out)
    before = _snapshot(out)
    with Holder(out) as holder:
        # --wait 0: one sentence naming the holder, exit 2, the holder's output untouched
        res = _run(*writer.args(world, out), writer.replace, "--wait", "0")
        assert res.returncode == 2
        _one_sentence_error(res.stderr, f"{out} is being written by another fghash process")
        assert f"(pid {holder.proc.pid})" in res.stderr and "--wait SECONDS" in res.stderr
        assert _snapshot(out) == before
        # --wait 120: it says what it waits for, waits, then replaces (or continues) it
        proc = _start(*writer.args(world, out), writer.replace, "--wait", "120")
        seen = _wait_for_line(proc, "waiting for")
        assert proc.poll() is None and _snapshot(out) == before  # still waiting
        holder.release()
        code, stderr = _finish(proc, seen)
    assert code == 0, stderr
    writer.complete(out, world)
    _nothing_hidden(tmp_path)


@pytest.mark.parametrize("writer", WRITERS, ids=lambda x: x.name)
def test_exists_check_is_repeated_once_the_lock_is_held(
    writer: Writer, world: dict[str, Path], tmp_path
) -> None:
    # out does not exist when the command starts; the holder writes one while the
    # command waits, so only a check made after the wait can see it
    out = tmp_path / "out"
    payload = world[writer.first]
    with Holder(out, payload=payload) as holder:
        proc = _start(*writer.args(world, out), "--wait", "120")
        seen = _wait_for_line(proc, "waiting for")
        holder.release()
        code, stderr = _finish(proc, seen)
    assert code == 2
    _one_sentence_error(stderr, writer.exists)
    assert _snapshot(out) == _snapshot(payload)  # the first writer's output, untouched
    _nothing_hidden(tmp_path)


# --- two real commands at once ---------------------------------------------------------


def test_two_encode_force_to_one_out_give_one_valid_codes_file(world, tmp_path) -> None:
    out = tmp_path / "codes.h5"
    procs = [_start("encode", world["run"], *ENCODE, "--out", out, "--force", "--wait", "120")]
    deadline = time.monotonic() + TIMEOUT
    while not lock_path(out).exists() and procs[0].poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    procs.append(_start("encode", world["run"], *ENCODE, "--out", out, "--force", "--wait", "120"))
    try:
        done = [(p.wait(timeout=TIMEOUT), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    finally:
        for p in procs:
            p.kill()
    assert [code for code, _ in done] == [0, 0], done
    assert not any("Traceback" in err for _, err in done)
    _codes_complete(out, world["encoded"])
    _nothing_hidden(tmp_path)


def test_two_bench_of_different_inputs_into_one_folder_one_wins(world, tmp_path) -> None:
    out = tmp_path / "report"
    procs = [_start("bench", world[c], *BENCH, "--out", out, "--wait", "120") for c in ("c0", "c1")]
    try:
        done = [(p.wait(timeout=TIMEOUT), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    finally:
        for p in procs:
            p.kill()
    assert sorted(code for code, _ in done) == [0, 2], done
    winner = ("c0", "c1")[[code for code, _ in done].index(0)]
    loser_err = next(err for code, err in done if code == 2)
    _one_sentence_error(loser_err, "holds the report of other inputs")
    _bench_complete(out, [world[winner]])
    _nothing_hidden(tmp_path)


@pytest.mark.slow  # two real trainings; the holder test above covers train's lock quickly
def test_train_into_a_run_being_trained_stops_with_one_sentence(world, tmp_path) -> None:
    out = tmp_path / "run"
    first = _start("train", *TRAIN, "--data-root", world["data"], "--out", out)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not lock_path(out).exists():  # the first holds the run folder's lock
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.02)
        # a new run into it: one sentence, exit 2, whether the first still trains or is done
        res = _run("train", *TRAIN, "--data-root", world["data"], "--out", out)
        assert res.returncode == 2, res.stderr
        assert "being written" in res.stderr or "already holds a trained run" in res.stderr
        assert "Traceback" not in res.stderr
        # a resume: refused while the first trains, after it a resume of a finished run
        res = _run("train", *TRAIN, "--data-root", world["data"], "--out", out, "--resume")
        assert res.returncode in (0, 2) and "Traceback" not in res.stderr, res.stderr
        if res.returncode == 2:
            _one_sentence_error(res.stderr, f"{out} is being written by another fghash process")
        assert first.wait(timeout=TIMEOUT) == 0, first.stderr.read()  # type: ignore[union-attr]
    finally:
        first.kill()
        first.wait(timeout=60)
    _run_complete(out, world["run"])
    _nothing_hidden(tmp_path)


# --- kill -9 at each step of bench and explain -----------------------------------------

BENCH_STEPS = ["bench:after-plots", "bench:after-report-md", "bench:after-report"]
EXPLAIN_STEPS = ["explain:after-plots", "explain:after-report"]


def _kill_case(step: str, replacing: bool) -> object:
    # quick: every step into a new folder, the first step of a replacement; the rest slow
    quick = step != "bench:after-report-md" and (not replacing or step.endswith("plots"))
    return pytest.param(
        step,
        replacing,
        marks=[] if quick else [pytest.mark.slow],
        id=f"{step}-{'replacing' if replacing else 'new'}",
    )


KILLS = [_kill_case(s, r) for s in BENCH_STEPS + EXPLAIN_STEPS for r in (False, True)]


@pytest.mark.parametrize(("step", "replacing"), KILLS)
def test_killed_report_is_undone_by_the_rerun(step: str, replacing: bool, world, tmp_path):
    """kill -9 at ``step`` of a run into a new folder, or of a ``--force`` run replacing
    the report of other inputs; the same command without ``--force`` then succeeds and
    leaves exactly its own complete report."""
    bench = step.startswith("bench:")
    out = tmp_path / "out"
    args = (
        ["bench", world["c0"], *BENCH, "--out", out]
        if bench
        else ["explain", world["c0"], *EXPLAIN, "--out", out]
    )
    if replacing:
        shutil.copytree(world["report" if bench else "explained"], out)
    killed = _run(*args, *(["--force"] if replacing else []), kill_at=step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / ".fghash-unfinished.json").is_file()  # the dead run's marker
    res = _run(*args)
    assert res.returncode == 0, res.stderr
    assert "already holds" not in res.stderr  # not taken for complete
    if bench:
        _bench_complete(out, [world["c0"]])
    else:
        _explain_complete(out, world["c0"])
    _nothing_hidden(out)
    _nothing_hidden(tmp_path)


def test_killed_report_keeps_the_users_files(world, tmp_path) -> None:
    """A --force run beside the user's own files is undone down to those files."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    args = ["explain", world["c0"], *EXPLAIN, "--out", out, "--force"]
    assert _run(*args, kill_at="explain:after-plots").returncode == -signal.SIGKILL
    res = _run(*args)
    assert res.returncode == 0, res.stderr
    assert (out / "notes.txt").read_text() == "mine\n"
    (out / "notes.txt").unlink()
    _explain_complete(out, world["c0"])
