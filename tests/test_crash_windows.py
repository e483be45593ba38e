"""``kill -9`` of a writer at each step of its change, injected deterministically.

``FGHASH_KILL_AT=<step>`` makes the real ``fghash`` process kill itself with SIGKILL at
that step (:func:`fghash.util.faults.checkpoint`). Then the next command must see the
whole before or the whole after state (bundle and codes file in step), proceed without
``--force``, and leave nothing hidden beside the bundle or the codes file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests._codes import random_split, write_splits

ROOT = Path(__file__).resolve().parents[1]
BITS = 20

ADD_STEPS = [
    ("add:codes-written", "before"),
    ("add:bundle-written", "before"),
    ("commit:journal-written", "after"),
    ("commit:codes-renamed", "after"),
    ("swap:exchanged", "after"),
    ("commit:bundle-switched", "after"),
    ("commit:done", "after"),
]
# A file system without an atomic exchange: the old bundle waits under a .old name.
NO_EXCHANGE = (
    "import sys, runpy, index.snapshot as s; s._EXCHANGE = None; "
    "sys.argv[0] = 'fghash'; runpy.run_module('fghash', run_name='__main__')"
)


def _split(n: int, first_id: int, seed: int):
    return random_split(n, first_id, seed, BITS)


def _write(path: Path, database, query=None) -> None:
    write_splits(path, BITS, database, query)


def _fghash(*args: object, kill_at: str | None = None, no_exchange: bool = False):
    env = dict(os.environ)
    env.pop("FGHASH_KILL_AT", None)
    if kill_at:
        env["FGHASH_KILL_AT"] = kill_at
    head = [sys.executable, "-c", NO_EXCHANGE] if no_exchange else [sys.executable, "-m", "fghash"]
    return subprocess.run(
        [*head, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def world(tmp_path: Path) -> Path:
    _write(tmp_path / "c.h5", _split(120, 0, seed=0), _split(4, 90_000, seed=9))
    _write(tmp_path / "new.h5", _split(10, 1000, seed=1))
    _write(tmp_path / "new2.h5", _split(7, 2000, seed=2))
    r = _fghash("build-index", tmp_path / "c.h5", "-o", tmp_path / "b", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    return tmp_path


def _ids(world: Path, codes_file: bool = True) -> list[int]:
    """The bundle's ids, checked equal to its codes file's (in step) when ``codes_file``."""
    from fghash.codes import file_checksum, read_codes
    from index import load_index, read_bundle_meta

    _, items = load_index(world / "b")
    ids = [int(i) for i in items.ids]
    if codes_file:
        assert read_codes(world / "c.h5")["database"].ids.tolist() == ids
        recorded = read_bundle_meta(world / "b")["codes"]["checksum"]
        assert recorded == file_checksum(world / "c.h5")
    return ids


def _hidden(world: Path) -> list[str]:
    return sorted(p.name for p in world.iterdir() if p.name.startswith("."))


BEFORE = list(range(120))
AFTER = BEFORE + list(range(1000, 1010))
NEW2 = list(range(2000, 2007))


@pytest.mark.parametrize(("step", "state"), ADD_STEPS, ids=[s for s, _ in ADD_STEPS])
def test_add_killed_then_search_then_add(world: Path, step: str, state: str) -> None:
    r = _fghash("add", world / "b", world / "new.h5", kill_at=step)
    assert r.returncode == -signal.SIGKILL, r.stderr
    search = ("search", world / "b", "--codes", world / "c.h5", "-k", "3", "--format", "jsonl")
    r = _fghash(*search)  # a reader first: it finishes the dead writer's change
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 4
    assert _ids(world) == (BEFORE if state == "before" else AFTER)
    assert _hidden(world) == []
    r = _fghash("add", world / "b", world / "new2.h5")  # no --force needed
    assert r.returncode == 0, r.stderr
    assert _ids(world) == (BEFORE if state == "before" else AFTER) + NEW2
    assert _hidden(world) == []


@pytest.mark.parametrize("step", ["add:codes-written", "commit:codes-renamed", "swap:exchanged"])
def test_add_killed_then_add(world: Path, step: str) -> None:
    r = _fghash("add", world / "b", world / "new.h5", kill_at=step)
    assert r.returncode == -signal.SIGKILL
    r = _fghash("add", world / "b", world / "new2.h5")
    assert r.returncode == 0, r.stderr
    want = (BEFORE if step == "add:codes-written" else AFTER) + NEW2
    assert _ids(world) == want
    assert _hidden(world) == []


@pytest.mark.parametrize("step", ["commit:journal-written", "swap:exchanged"])
def test_add_without_codes_file_killed(world: Path, step: str) -> None:
    r = _fghash("add", world / "b", world / "new.h5", "--no-codes-file", kill_at=step)
    assert r.returncode == -signal.SIGKILL
    r = _fghash("info", world / "b", "--verify")
    assert r.returncode == 0, r.stderr
    assert _ids(world, codes_file=False) == AFTER
    assert _hidden(world) == []


def test_switch_without_exchange_killed_between_renames(world: Path) -> None:
    """Where the file system cannot exchange, the bundle is missing under its name for a
    moment; a writer killed then leaves it under .b.<pid>-*.old, and the next command
    puts it back (a build-index that would otherwise delete it)."""
    r = _fghash("add", world / "b", world / "new.h5", kill_at="swap:moved-old", no_exchange=True)
    assert r.returncode == -signal.SIGKILL
    assert not (world / "b").exists()
    assert any(n.endswith(".old") for n in _hidden(world))
    r = _fghash("info", world / "b")
    assert r.returncode == 0, r.stderr
    assert _ids(world) == AFTER  # journal rolled forward: the new bundle went in
    assert _hidden(world) == []


def test_build_force_killed_after_exchange(world: Path) -> None:
    r = _fghash(
        "build-index", world / "c.h5", "-o", world / "b", "--force", kill_at="swap:exchanged"
    )
    assert r.returncode == -signal.SIGKILL
    assert any(n.endswith(".tmp") for n in _hidden(world))  # the old bundle, swapped out
    r = _fghash("build-index", world / "c.h5", "-o", world / "b", "--force")
    assert r.returncode == 0, r.stderr
    assert _ids(world) == BEFORE
    assert _hidden(world) == []


def test_build_killed_without_exchange_keeps_the_old_bundle(world: Path) -> None:
    r = _fghash(
        "build-index", world / "c.h5", "-o", world / "b", "--force",
        kill_at="swap:moved-old", no_exchange=True,
    )  # fmt: skip
    assert r.returncode == -signal.SIGKILL
    assert not (world / "b").exists()
    r = _fghash("build-index", world / "c.h5", "-o", world / "b")  # no --force: b is back
    assert r.returncode == 2 and "already exists" in r.stderr, r.stderr
    assert _ids(world) == BEFORE
    assert _hidden(world) == []
