"""Issue 20 item 5, the silent cases made loud: each refused with exit 2 and one sentence
(``Error: ...``, no traceback), nothing changed on disk; or, where it should work, working."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fghash.cli import main
from fghash.codes import Split, make_codes_file, signs_to_codes, write_codes


def _invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def _error_line(r) -> str:
    """The one ``Error:`` line of a refused command (exit 2, no traceback)."""
    assert r.exit_code == 2, (r.output, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exc_info
    assert "Traceback" not in r.output
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _split(rng: np.random.Generator, n: int, bits: int, **kw) -> Split:
    return Split(signs_to_codes(rng.standard_normal((n, bits))), labels=rng.integers(0, 3, n), **kw)


# --- explain refuses non-finite relaxed values -----------------------------------------


def test_explain_refuses_relaxed_values_that_are_mostly_nan(tmp_path):
    rng = np.random.default_rng(0)
    relaxed = np.tanh(rng.standard_normal((30, 8))).astype(np.float32)
    relaxed[:, : 2 * 8 // 3 + 1] = np.nan  # two-thirds of every row
    attrs = rng.integers(0, 2, (30, 4)).astype(np.uint8)
    db = Split(
        signs_to_codes(np.nan_to_num(relaxed, nan=1.0)),
        labels=rng.integers(0, 3, 30),
        features=relaxed,
        features_kind="relaxed_code",
        attributes=attrs,
    )
    codes = write_codes(tmp_path / "nan.h5", make_codes_file(8, db, method="a2net"))
    before = _digest(codes)
    out = tmp_path / "ex"
    line = _error_line(_invoke("explain", codes, "--out", out, "--rotations", "3"))
    assert "NaN" in line and "nan.h5" in line and "/database/features" in line
    assert not out.exists()
    assert _digest(codes) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.h5"]


def test_explain_still_accepts_finite_relaxed_values(tmp_path):
    rng = np.random.default_rng(1)
    relaxed = np.tanh(rng.standard_normal((30, 8))).astype(np.float32)
    db = Split(
        signs_to_codes(relaxed),
        labels=rng.integers(0, 3, 30),
        features=relaxed,
        features_kind="relaxed_code",
        attributes=rng.integers(0, 2, (30, 4)).astype(np.uint8),
    )
    codes = write_codes(tmp_path / "ok.h5", make_codes_file(8, db, method="a2net"))
    r = _invoke("explain", codes, "--out", tmp_path / "ex", "--rotations", "3")
    assert r.exit_code == 0, r.output


# --- search --grid never overwrites without --force ------------------------------------


def _bundle(tmp_path: Path, method: str = "a2net", config: dict | None = None) -> Path:
    rng = np.random.default_rng(2)
    cf = make_codes_file(
        8, _split(rng, 40, 8, ids=np.arange(40)), method=method, config=config or {"seed": 0}
    )
    codes = write_codes(tmp_path / "codes.h5", cf)
    r = _invoke("build-index", codes, "--out", tmp_path / "bundle")
    assert r.exit_code == 0, r.output
    return tmp_path / "bundle"


def test_search_grid_refuses_to_overwrite_a_users_file(tmp_path):
    bundle = _bundle(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    image = tmp_path / "q.png"
    image.write_bytes(b"not even read")
    line = _error_line(_invoke("search", bundle, "--image", image, "--grid", notes))
    assert "notes.txt" in line and "--force" in line
    assert notes.read_text() == "my notes\n"


# --- add refuses codes of another method or run unless --allow-mixed -------------------


def _new_codes(tmp_path: Path, name: str, method: str, config: dict) -> Path:
    rng = np.random.default_rng(3)
    cf = make_codes_file(
        8, _split(rng, 5, 8, ids=np.arange(100, 105)), method=method, config=config
    )
    return write_codes(tmp_path / name, cf)


def _state(tmp_path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(tmp_path)): _digest(p) for p in sorted(tmp_path.rglob("*")) if p.is_file()
    }


def test_add_refuses_codes_of_another_method(tmp_path):
    bundle = _bundle(tmp_path)
    itq = _new_codes(tmp_path, "itq.h5", "itq", {"seed": 0})
    before = _state(tmp_path)
    line = _error_line(_invoke("add", bundle, itq))
    assert "itq" in line and "a2net" in line and "--allow-mixed" in line
    assert _state(tmp_path) == before  # bundle, codes file and index.json untouched
    r = _invoke("add", bundle, itq, "--allow-mixed")
    assert r.exit_code == 0, r.output
    assert "added 5 items" in r.output and "45 in all" in r.output


def test_add_refuses_codes_of_another_run_of_the_same_method(tmp_path):
    bundle = _bundle(tmp_path, config={"seed": 0})
    other = _new_codes(tmp_path, "other.h5", "a2net", {"seed": 1})
    before = _state(tmp_path)
    line = _error_line(_invoke("add", bundle, other))
    assert "another a2net run" in line and "--allow-mixed" in line
    assert _state(tmp_path) == before
    same = _new_codes(tmp_path, "same.h5", "a2net", {"seed": 0})  # same config: same run
    r = _invoke("add", bundle, same)
    assert r.exit_code == 0, r.output


# --- folders honour the umask -----------------------------------------------------------


@pytest.fixture
def umask():
    """Set the process umask for one test, and put the old one back."""
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.parametrize(
    ("mask", "dir_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)]
)
def test_bundle_folders_honour_the_umask(tmp_path, umask, mask, dir_mode, file_mode):
    umask(mask)
    bundle = _bundle(tmp_path)
    assert stat.S_IMODE(bundle.stat().st_mode) == dir_mode
    files = [p for p in bundle.rglob("*") if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == file_mode for p in files)
    # add swaps in a new bundle folder: the same mode again
    more = _new_codes(tmp_path, "more.h5", "a2net", {"seed": 0})
    assert _invoke("add", bundle, more).exit_code == 0
    assert stat.S_IMODE(bundle.stat().st_mode) == dir_mode


def test_explain_folders_honour_the_umask(tmp_path, umask):
    umask(0o022)
    rng = np.random.default_rng(4)
    db = _split(rng, 30, 8)
    codes = write_codes(tmp_path / "c.h5", make_codes_file(8, db, method="itq"))
    out = tmp_path / "ex"
    assert _invoke("explain", codes, "--out", out, "--rotations", "3").exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
