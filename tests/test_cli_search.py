"""`fghash info`, `fghash build-index` and `fghash search` through click's CliRunner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("faiss")

from fghash.cli import main  # noqa: E402
from fghash.codes import Split, code_to_hex, make_codes_file, pack_bits, write_codes  # noqa: E402
from tests._knn import hamming_matrix  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _codes_file(path: Path, bits: int = 24, n: int = 200, nq: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    db = Split(
        pack_bits(rng.integers(0, 2, (n, bits))),
        ids=np.arange(n) * 10 + 3,
        labels=rng.integers(0, 4, n),
        paths=[f"img/{i}.jpg" for i in range(n)],
    )
    q = Split(
        pack_bits(rng.integers(0, 2, (nq, bits))),
        ids=np.arange(nq) + 900,
        labels=rng.integers(0, 4, nq),
        paths=[f"q/{i}.jpg" for i in range(nq)],
    )
    return write_codes(path, make_codes_file(bits, db, q, method="itq", config={"seed": seed}))


def run(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_user_error(result: object, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    for n in needles:
        assert n in result.output, (n, result.output)


@pytest.fixture()
def bundle(tmp_path: Path) -> tuple[Path, Path]:
    codes = _codes_file(tmp_path / "codes.h5")
    out = tmp_path / "idx"
    r = run("build-index", codes, "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    return codes, out


def test_every_command_has_help() -> None:
    for cmd in ("info", "build-index", "search"):
        r = run(cmd, "--help")
        assert r.exit_code == 0 and "Usage:" in r.output


def test_build_index_reports_what_and_where(tmp_path: Path) -> None:
    codes = _codes_file(tmp_path / "codes.h5")
    r = run("build-index", codes, "--out", tmp_path / "ivf", "--type", "ivf", "--nlist", "4")
    assert r.exit_code == 0, r.output
    assert "built ivf index on CPU: 200 items, 24-bit codes, stored as 32" in r.output
    assert "nlist=4" in r.output and str(tmp_path / "ivf") in r.output
    meta = json.loads((tmp_path / "ivf" / "index.json").read_text())
    assert meta["kind"] == "ivf" and meta["params"]["nlist"] == 4


def test_search_jsonl_matches_brute_force(bundle: tuple[Path, Path]) -> None:
    codes, out = bundle
    r = run("search", out, "--codes", codes, "-k", "5", "--format", "jsonl", "--limit", "4")
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()  # JSON on stdout; log lines go to stderr
    assert len(lines) == 4
    with h5py.File(codes) as f:
        xb, xq = f["database/codes"][()], f["query/codes"][()]
        db_ids, db_lab = f["database/ids"][()], f["database/labels"][()]
        q_lab = f["query/labels"][()]
    dist = hamming_matrix(xq, xb)
    for qi, line in enumerate(lines):
        obj = json.loads(line)
        assert obj["query"] == {"id": 900 + qi, "label": int(q_lab[qi]), "path": f"q/{qi}.jpg"}
        res = obj["results"]
        assert [h["rank"] for h in res] == [1, 2, 3, 4, 5]
        assert [h["distance"] for h in res] == sorted(dist[qi])[:5]
        for h in res:
            pos = int(np.flatnonzero(db_ids == h["id"])[0])
            assert h["distance"] == dist[qi, pos]
            assert h["label"] == int(db_lab[pos]) and h["path"] == f"img/{pos}.jpg"


def test_search_one_hex_code(bundle: tuple[Path, Path]) -> None:
    codes, out = bundle
    with h5py.File(codes) as f:
        code = f["database/codes"][17]
    r = run("search", out, "--code", code_to_hex(code), "-k", "3", "--format", "jsonl")
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["query"] == {"id": None, "label": None, "path": None}
    assert obj["results"][0]["distance"] == 0
    table = run("search", out, "--code", code_to_hex(code), "-k", "3")
    assert table.exit_code == 0 and "rank" in table.output and "img/" in table.output


def test_info_codes_and_bundle(bundle: tuple[Path, Path]) -> None:
    codes, out = bundle
    r = run("info", codes, "--format", "json")
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert d["type"] == "codes" and d["bits"] == 24 and d["method"] == "itq"
    assert d["splits"]["database"]["n"] == 200 and d["splits"]["query"]["n"] == 6
    r = run("info", out, "--format", "json")
    d = json.loads(r.stdout)
    assert (d["type"], d["kind"], d["bits"], d["dim"], d["ntotal"]) == (
        "index",
        "flat",
        24,
        32,
        200,
    )
    assert d["codes"]["checksum"].startswith("sha256:")
    for path in (codes, out):
        r = run("info", path)
        assert r.exit_code == 0 and "bits" in r.output


# --- bad input: one sentence, exit 2, nothing touched -----------------------------------


def test_bad_files(tmp_path: Path, bundle: tuple[Path, Path]) -> None:
    codes, out = bundle
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    assert_user_error(run("info", tmp_path / "missing.h5"), "no such")
    assert_user_error(run("info", junk), "not an HDF5")
    assert_user_error(
        run("build-index", tmp_path / "missing.h5", "--out", tmp_path / "x"), "no such"
    )
    assert_user_error(run("build-index", junk, "--out", tmp_path / "x"), "not an HDF5")
    assert_user_error(run("search", tmp_path / "nope", "--codes", codes), "no such index bundle")
    assert_user_error(run("search", out, "--codes", junk), "not an HDF5")
    assert_user_error(run("search", codes, "--codes", codes), "not an fghash index bundle")
    assert not (tmp_path / "x").exists()


def test_wrong_schema_version(tmp_path: Path) -> None:
    codes = _codes_file(tmp_path / "codes.h5")
    with h5py.File(codes, "r+") as f:
        f.attrs["version"] = 7
    before = codes.read_bytes()
    assert_user_error(run("build-index", codes, "--out", tmp_path / "x"), "version", str(codes))
    assert codes.read_bytes() == before and not (tmp_path / "x").exists()


def test_bits_mismatch(tmp_path: Path, bundle: tuple[Path, Path]) -> None:
    _, out = bundle
    other = _codes_file(tmp_path / "other.h5", bits=32)
    assert_user_error(run("search", out, "--codes", other), "32-bit", "24-bit")
    assert_user_error(run("search", out, "--code", "00112233"), "24-bit")


def test_bad_k(bundle: tuple[Path, Path]) -> None:
    codes, out = bundle
    assert_user_error(run("search", out, "--codes", codes, "-k", "0"), "k must be")
    assert_user_error(run("search", out, "--codes", codes, "-k", "-3"), "k must be")
    assert_user_error(run("search", out, "--codes", codes, "-k", "201"), "larger than the database")
    assert run("search", out, "--codes", codes, "-k", "200", "--format", "jsonl").exit_code == 0


def test_code_and_codes_both_or_neither(bundle: tuple[Path, Path]) -> None:
    codes, out = bundle
    assert_user_error(run("search", out), "--codes", "--code")
    assert_user_error(run("search", out, "--codes", codes, "--code", "000000"), "not both")


def test_bad_index_requests(tmp_path: Path, bundle: tuple[Path, Path]) -> None:
    codes, out = bundle
    before = (out / "index.faiss").read_bytes()
    assert_user_error(
        run("build-index", codes, "--out", tmp_path / "x", "--type", "lsh"), "flat, ivf, hnsw"
    )
    assert_user_error(run("build-index", codes, "--out", out), "already exists", "--force")
    assert_user_error(
        run("build-index", codes, "--out", out, "--force", "--type", "ivf", "--nlist", "50"),
        "--nlist 5",
    )
    assert (out / "index.faiss").read_bytes() == before
    assert_user_error(run("search", out, "--codes", codes, "--nprobe", "3"), "ivf")
    assert_user_error(
        run("build-index", codes, "--out", tmp_path / "x", "--split", "val"), "no split"
    )
    assert not (tmp_path / "x").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.h5", "idx"]


def test_empty_database_and_too_small_ivf(tmp_path: Path) -> None:
    empty = write_codes(
        tmp_path / "empty.h5", make_codes_file(16, Split(np.zeros((0, 2), np.uint8)))
    )
    assert_user_error(run("build-index", empty, "--out", tmp_path / "x"), "empty")
    small = _codes_file(tmp_path / "small.h5", n=20)
    assert_user_error(
        run("build-index", small, "--out", tmp_path / "x", "--type", "ivf"), "at least 39"
    )
    assert not (tmp_path / "x").exists()


def test_search_never_imports_torch(bundle: tuple[Path, Path]) -> None:
    codes, out = bundle
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from fghash.cli import main\n"
        f"r = CliRunner().invoke(main, ['search', {str(out)!r}, '--codes', {str(codes)!r}, '-k', '3'])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(main, ['info', " + repr(str(out)) + "])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'faiss' in sys.modules\n"
        "assert 'torch' not in sys.modules, 'fghash search imported torch'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def test_search_tensor_engine_on_cpu(tmp_path: Path, bundle: tuple[Path, Path]) -> None:
    """--engine tensor --device cpu returns exactly the flat index's answer (ties by
    position), k up to the database size, and refuses non-flat bundles."""
    pytest.importorskip("torch")
    codes, out = bundle
    with h5py.File(codes) as f:
        xb, xq, db_ids = f["database/codes"][()], f["query/codes"][()], f["database/ids"][()]
    for k in ("7", "200"):
        args = ("search", out, "--codes", codes, "-k", k, "--format", "jsonl", "--device", "cpu")
        tensor, faiss_ = run(*args, "--engine", "tensor"), run(*args, "--engine", "faiss")
        assert tensor.exit_code == 0 and faiss_.exit_code == 0, tensor.output + faiss_.output
        assert tensor.stdout == faiss_.stdout
        dist = hamming_matrix(xq, xb)
        for qi, line in enumerate(tensor.stdout.strip().splitlines()):
            order = np.argsort(dist[qi], kind="stable")[: int(k)]
            assert [h["id"] for h in json.loads(line)["results"]] == db_ids[order].tolist()
    hnsw = tmp_path / "hnsw"
    assert (
        run("build-index", codes, "--out", hnsw, "--type", "hnsw", "--device", "cpu").exit_code == 0
    )
    assert_user_error(
        run("search", hnsw, "--codes", codes, "--engine", "tensor", "--device", "cpu"), "flat"
    )


def test_search_engine_default_is_auto_and_never_imports_torch(bundle: tuple[Path, Path]) -> None:
    codes, out = bundle
    engine = next(p for p in main.commands["search"].params if p.name == "engine")
    assert engine.default == "auto"
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from fghash.cli import main\n"
        f"for extra in ([], ['--device', 'cpu'], ['--engine', 'auto', '--device', 'cpu']):\n"
        f"    r = CliRunner().invoke(main, ['search', {str(out)!r}, '--codes', {str(codes)!r}] + extra)\n"
        "    assert r.exit_code == 0, r.output\n"
        "assert 'torch' not in sys.modules, 'the default engine imported torch'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
