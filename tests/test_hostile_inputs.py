"""Hostile files and huge numbers (issue 20, item 4): one sentence, exit 2, no traceback."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("faiss")

from fghash.cli import main  # noqa: E402
from fghash.codes import Split, make_codes_file, pack_bits, write_codes  # noqa: E402

BITS = 16


def _codes_file(path: Path, n: int = 40, nq: int = 3, db_paths: list[str] | None = None) -> Path:
    rng = np.random.default_rng(0)
    db = Split(
        pack_bits(rng.integers(0, 2, (n, BITS))),
        ids=np.arange(n),
        labels=rng.integers(0, 4, n),
        paths=db_paths or [f"img/{i}.jpg" for i in range(n)],
    )
    q = Split(
        pack_bits(rng.integers(0, 2, (nq, BITS))),
        ids=np.arange(nq) + 900,
        labels=rng.integers(0, 4, nq),
        paths=[f"q/{i}.jpg" for i in range(nq)],
    )
    return write_codes(path, make_codes_file(BITS, db, q, method="itq"))


def run(*args: object, env: dict[str, str] | None = None) -> object:
    start = time.monotonic()
    result = CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)
    assert time.monotonic() - start < 60, args
    return result


def assert_one_sentence(result: object, *needles: str) -> None:
    """Exit 2, no traceback, exactly one ``Error:`` line holding each of ``needles``."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    for n in needles:
        assert n in result.output, (n, result.output)


def _bundle(tmp_path: Path, *extra: object, **kw: object) -> tuple[Path, Path]:
    codes = _codes_file(tmp_path / "codes.h5", **kw)  # type: ignore[arg-type]
    out = tmp_path / "idx"
    r = run("build-index", codes, "--out", out, "--device", "cpu", *extra)
    assert r.exit_code == 0, r.output
    return codes, out


def test_control_characters_in_stored_paths_forge_no_rows(tmp_path: Path) -> None:
    paths = ["a\nquery 9: forged\n  1  2  0  x  y"] * 40
    codes, out = _bundle(tmp_path, db_paths=paths)
    r = run("search", out, "--codes", codes, "-k", "3", "--device", "cpu")
    assert r.exit_code == 0, r.output
    lines = r.output.rstrip("\n").split("\n")
    # per query: its head, the column heads, k rows; blank lines between queries
    assert len(lines) == 3 * (1 + 1 + 3) + 2, r.output
    assert not any(line.startswith("query 9") for line in lines)
    assert [line for line in lines if line.startswith("query ")] == [
        line for line in lines if line.startswith(("query 1:", "query 2:", "query 3:"))
    ]
    assert sum(line.startswith("query ") for line in lines) == 3
    assert "a\\nquery 9: forged\\n" in r.output


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--ef-search", 10**30),
        ("--nprobe", 2**40),
        ("--nflip", 10**12),
        ("-k", 10**20),
    ],
)
def test_huge_search_options_are_usage_errors(tmp_path: Path, option: str, value: int) -> None:
    codes, out = _bundle(tmp_path)
    r = run("search", out, "--code", "0000", option, value, "--device", "cpu")
    assert_one_sentence(r, option.lstrip("-")[:2], "range")


def test_huge_threads_and_per_bit_are_usage_errors(tmp_path: Path) -> None:
    codes = _codes_file(tmp_path / "codes.h5")
    r = run("bench", codes, "--out", tmp_path / "b", "--threads", 10**9)
    assert_one_sentence(r, "--threads", "range")
    r = run("explain", codes, "--out", tmp_path / "e", "--per-bit", 10**9)
    assert_one_sentence(r, "--per-bit", "range")
    for option in ("--runs", "--latency-queries"):
        r = run("bench", codes, "--out", tmp_path / "b", option, 10**12)
        assert_one_sentence(r, option, "range")
    for option in ("--rotations", "--num-queries"):
        r = run("explain", codes, "--out", tmp_path / "e", option, 10**12)
        assert_one_sentence(r, option, "range")


def test_huge_omp_num_threads_in_a_real_process(tmp_path: Path) -> None:
    """libgomp reads OMP_NUM_THREADS when torch or FAISS load: refused before that."""
    codes, out = _bundle(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "99999999999"}
    cmd = [sys.executable, "-m", "fghash", "search", str(out), "--code", "0000"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert [x for x in p.stderr.splitlines() if x.startswith("Error:")] == [
        x for x in p.stderr.splitlines() if "OMP_NUM_THREADS" in x
    ]
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_nflip_above_hash_b_is_refused(tmp_path: Path) -> None:
    codes, out = _bundle(tmp_path, "--type", "hash", "--hash-b", "8")
    r = run("search", out, "--code", "0000", "--nflip", "9", "--device", "cpu")
    assert_one_sentence(r, "--nflip 9", "hash_b")
    r = run("search", out, "--code", "0000", "--nflip", "8", "-k", "2", "--device", "cpu")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("value", ["99999999999", "abc", "0", "-3", "4,x"])
def test_bad_omp_num_threads_is_one_sentence(tmp_path: Path, value: str) -> None:
    codes, out = _bundle(tmp_path)
    r = run("search", out, "--code", "0000", "--device", "cpu", env={"OMP_NUM_THREADS": value})
    assert_one_sentence(r, "OMP_NUM_THREADS")


def test_good_omp_num_threads_still_works(tmp_path: Path) -> None:
    codes, out = _bundle(tmp_path)
    r = run("search", out, "--code", "0000", "--device", "cpu", env={"OMP_NUM_THREADS": "2"})
    assert r.exit_code == 0, r.output


def _declared_png(path: Path, width: int, height: int) -> Path:
    """A 1x1 PNG whose header (IHDR, CRC fixed) declares ``width`` x ``height`` pixels."""
    from PIL import Image

    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("side", [30_000, 11_000])  # past Pillow's error; past fghash's limit
def test_decompression_bomb_query_image_is_one_sentence(tmp_path: Path, side: int) -> None:
    codes, out = _bundle(tmp_path)
    bomb = _declared_png(tmp_path / "bomb.png", side, side)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    r = run("search", out, "--image", bomb, "--run", run_dir, "--device", "cpu")
    assert_one_sentence(r, "bomb.png", "too large")


def test_decompression_bomb_in_a_data_set_is_refused(tmp_path: Path) -> None:
    from fghash.data.base import ImageListDataset
    from fghash.errors import FghashError

    _declared_png(tmp_path / "bomb.png", 11_000, 11_000)
    ds = ImageListDataset(tmp_path, ["bomb.png"], [0], ["a"])
    with pytest.raises(FghashError, match="decompression bomb"):
        ds.load_image(0)
    ds.skip_corrupt = True
    assert ds.load_image(0) is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ntotal", "abc"),
        ("bits", [1]),
        ("bits", True),
        ("dim", 12.5),
        ("params", "x"),
        ("kind", 3),
        ("codes", 7),
        ("index_file", {"size": "big"}),
        ("bits", 40),  # more than dim 32
        ("bits", 24),  # dim still fits, but code_bytes says 2 bytes
        ("padded", False),
        ("stored_bytes", 8),
    ],
)
def test_index_json_of_wrong_type_or_shape_is_one_sentence(
    tmp_path: Path, key: str, value: object
) -> None:
    codes, out = _bundle(tmp_path)
    meta_path = out / "index.json"
    meta = json.loads(meta_path.read_text())
    assert meta["bits"] == BITS and meta["dim"] == 32 and meta["code_bytes"] == 2
    meta[key] = value
    meta_path.write_text(json.dumps(meta))
    for args in (("search", out, "--code", "0000", "--device", "cpu"), ("info", out)):
        assert_one_sentence(run(*args), "index.json", key)


# --- declared sizes (10**12 rows that HDF5 never allocated) ---------------------------


def _fghash_process(*args: object, timeout: float = 60) -> tuple[int, str, float]:
    """``fghash ARGS`` in a new process: exit status, stderr, seconds."""
    start = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-m", "fghash", *map(str, args)],
        capture_output=True,
        timeout=timeout,
    )
    return p.returncode, p.stderr.decode("utf-8", "replace"), time.monotonic() - start


def _assert_one_sentence_process(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, err)


def _declares_rows(path: Path, n: int = 10**12, *, features: bool = False) -> Path:
    """A codes file whose database split declares ``n`` rows and stores none of them."""
    import h5py

    from fghash.codes.file import write_header

    with h5py.File(path, "w") as f:
        write_header(f, BITS, "itq", {})
        g = f.create_group("database")
        g.create_dataset("codes", shape=(n, 2), dtype=np.uint8, chunks=(65536, 2))
        g.create_dataset("ids", shape=(n,), dtype=np.int64, chunks=(65536,))
        g.create_dataset("labels", shape=(n,), dtype=np.int64, chunks=(65536,))
        if features:
            g.create_dataset("features", shape=(n, 8), dtype=np.float32, chunks=(4096, 8))
        q = f.create_group("query")
        q.create_dataset("codes", data=np.zeros((3, 2), np.uint8))
        q.create_dataset("ids", data=np.arange(3) + 10**13)
        q.create_dataset("labels", data=np.zeros(3, np.int64))
    assert path.stat().st_size < 1 << 20
    return path


def test_declared_trillion_rows_are_refused_by_every_reader(tmp_path: Path) -> None:
    huge = _declares_rows(tmp_path / "huge.h5", features=True)
    codes, out = _bundle(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    for args in (
        ("info", huge),
        ("info", huge, "--verify"),
        ("build-index", huge, "--out", tmp_path / "hb", "--device", "cpu"),
        ("bench", huge, "--out", tmp_path / "hbench", "--device", "cpu"),
        ("add", out, huge, "--device", "cpu", "--allow-mixed"),
        ("search", out, "--codes", huge, "--split", "database", "--device", "cpu"),
        ("explain", huge, "--out", tmp_path / "hexplain"),
        ("baseline", "itq", "--features", huge, "--bits", "16", "--out", tmp_path / "bl.h5"),
    ):
        code, err, seconds = _fghash_process(*args)
        assert seconds < 20, (args, seconds)
        _assert_one_sentence_process(code, err, "huge.h5", "1,000,000,000,000 rows")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    r = run("search", out, "--codes", codes, "-k", "2", "--device", "cpu")  # bundle unharmed
    assert r.exit_code == 0, r.output


def test_a_split_larger_than_memory_is_refused_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fghash.codes.checks as checks

    codes, out = _bundle(tmp_path)
    monkeypatch.setattr(checks, "available_memory", lambda: 10)
    r = run("search", out, "--codes", codes, "-k", "2", "--device", "cpu")
    assert_one_sentence(r, "codes.h5", "memory", "available")
    monkeypatch.setattr(checks, "available_memory", lambda: None)  # unknown: no refusal
    assert run("search", out, "--codes", codes, "-k", "2", "--device", "cpu").exit_code == 0


def test_declared_sizes_of_real_files_pass(tmp_path: Path) -> None:
    """Written files (chunked, contiguous, compressed by another tool) are not refused."""
    import h5py

    from fghash.codes import read_codes

    path = _codes_file(tmp_path / "c.h5", n=300_000)
    with h5py.File(path, "r+") as f:  # rewrite the ids compressed, as another tool might
        ids = f["database/ids"][()]
        del f["database/ids"]
        f["database"].create_dataset("ids", data=ids, compression="gzip", chunks=(1 << 16,))
    assert len(read_codes(path).splits["database"].ids) == 300_000
    code, err, _ = _fghash_process("info", path, "--verify")
    assert code == 0, err


# --- index, train and demo options: huge numbers are usage errors -----------------------


@pytest.mark.parametrize("option", ["--nlist", "--hnsw-m", "--hash-b", "--nhash"])
def test_huge_build_index_options_are_usage_errors(tmp_path: Path, option: str) -> None:
    codes = _codes_file(tmp_path / "codes.h5")
    r = run("build-index", codes, "--out", tmp_path / "idx", option, 10**30, "--device", "cpu")
    assert_one_sentence(r, option, "range")
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--batch-size", 10**30), ("--label", 10**30), ("--first-id", -(10**30)), ("--batch-size", 0)],
)
def test_huge_add_options_are_usage_errors(tmp_path: Path, option: str, value: int) -> None:
    codes, out = _bundle(tmp_path)
    r = run("add", out, "--run", tmp_path, "--images", tmp_path, option, value, "--device", "cpu")
    assert_one_sentence(r, option, "range")


TRAIN_OPTIONS = [
    "--num-attention", "--image-size", "--resize", "--batch-size", "--max-iter", "--epochs",
    "--num-samples", "--hold-codes", "--eval-every", "--num-workers", "--nan-check-every",
    "--keep-checkpoints", "--seed",
]  # fmt: skip


@pytest.mark.parametrize("option", TRAIN_OPTIONS)
def test_huge_train_options_are_usage_errors(tmp_path: Path, option: str) -> None:
    out = tmp_path / "run"
    args = ["train", "--dataset", "synthetic", "--data-root", tmp_path, "--out", out]
    assert_one_sentence(run(*args, option, 10**30), option, "range")
    assert not out.exists()


@pytest.mark.parametrize("option", ["--bits", "--max-iter", "--epochs", "--num-samples", "--seed"])
def test_huge_demo_options_are_usage_errors(tmp_path: Path, option: str) -> None:
    out = tmp_path / "demo"
    assert_one_sentence(run("demo", "--out", out, option, 10**30), option, "range")
    assert not out.exists()


def test_a_negative_seed_is_a_usage_error(tmp_path: Path) -> None:
    r = run("demo", "--out", tmp_path / "demo", "--seed", -1)
    assert_one_sentence(r, "--seed", "range")


# --- synthetic data folders honour the umask ----------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_synthetic_data_folder_honours_the_umask(tmp_path: Path, umask: int) -> None:
    root = tmp_path / "data"
    code = (
        "import os, sys; os.umask(int(sys.argv[2], 8)); "
        "from fghash.data.synthetic import generate_synthetic as g; "
        "g(sys.argv[1], num_classes=2, train_per_class=2, test_per_class=1, image_size=16)"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, str(root), oct(umask)], capture_output=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert root.stat().st_mode & 0o777 == 0o777 & ~umask
    for sub in [q for q in root.rglob("*") if q.is_dir()]:
        assert sub.stat().st_mode & 0o777 == 0o777 & ~umask, sub
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".")]


# --- file names that are not UTF-8 --------------------------------------------------------

LATIN1 = os.fsdecode(b"caf\xe9")  # what os.listdir gives for the bytes caf\xe9


def _strict_process(*args: object) -> tuple[int, str, str]:
    """``fghash ARGS`` in a new process with strict UTF-8 output (as in a UTF-8 locale
    other than C, where a name's bytes fail to print): exit status, stdout and stderr,
    both required to be UTF-8."""
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
    cmd = [os.fsencode(sys.executable), b"-m", b"fghash", *map(os.fsencode, map(str, args))]
    p = subprocess.run(cmd, capture_output=True, timeout=120, env=env)
    out, err = p.stdout.decode("utf-8"), p.stderr.decode("utf-8")  # strict: no raw bytes
    assert "Traceback" not in err, err
    return p.returncode, out, err


def _no_temporaries(folder: Path) -> None:
    names = [p.name for p in folder.rglob("*")]
    assert not [n for n in names if n.startswith(".") or n.endswith((".tmp", ".bak"))], names


def test_codes_file_and_outputs_named_in_latin1(tmp_path: Path) -> None:
    codes = _codes_file(tmp_path / f"{LATIN1}.h5")
    code, out, err = _strict_process("info", codes)
    assert code == 0, err
    code, out, err = _strict_process(
        "build-index", codes, "--out", tmp_path / "idx", "--device", "cpu"
    )
    assert code == 0, err
    code, out, err = _strict_process(
        "search", tmp_path / "idx", "--codes", codes, "-k", 2, "--device", "cpu"
    )
    assert code == 0, err
    bench = tmp_path / f"bench-{LATIN1}"
    code, out, err = _strict_process("bench", codes, "--out", bench, "--device", "cpu")
    assert code == 0, err
    assert "caf\\xe9" in (bench / "report.md").read_text(encoding="utf-8")
    code, out, err = _strict_process(
        "baseline", "itq", "--features", codes, "--bits", 16, "--out", tmp_path / f"b-{LATIN1}.h5"
    )
    assert code == 2 and "features" in err, err  # no features: one sentence naming it
    assert [x for x in err.splitlines() if x.startswith("Error:")][0].count("caf\\xe9") == 1
    code, out, err = _strict_process("search", tmp_path / f"none-{LATIN1}", "--code", "0000")
    assert code == 2 and "none-caf\\xe9" in err, err
    _no_temporaries(tmp_path)


def test_bundle_named_in_latin1(tmp_path: Path) -> None:
    codes = _codes_file(tmp_path / "codes.h5")
    out = tmp_path / f"idx-{LATIN1}"
    code, _, err = _strict_process("build-index", codes, "--out", out, "--device", "cpu")
    assert code == 0, err
    code, _, err = _strict_process("search", out, "--code", "0000", "-k", 1, "--device", "cpu")
    assert code == 0, err
    _no_temporaries(tmp_path)


def test_bundle_items_with_paths_that_are_not_utf8(tmp_path: Path) -> None:
    codes = _codes_file(tmp_path / "c.h5", db_paths=[f"{LATIN1}/{i}.jpg" for i in range(40)])
    code, _, err = _strict_process(
        "build-index", codes, "--out", tmp_path / "idx", "--device", "cpu"
    )
    assert code == 0, err
    code, out, err = _strict_process(
        "search", tmp_path / "idx", "--codes", codes, "-k", 2, "--device", "cpu"
    )
    assert code == 0, err
    assert "caf\\xe9/" in out  # the stored path, its byte escaped
    _no_temporaries(tmp_path)


def test_stored_paths_that_are_not_utf8_round_trip(tmp_path: Path) -> None:
    """An image whose name is not UTF-8 keeps its bytes in a codes file: read back, the
    path opens the same file."""
    from fghash.codes import append_codes, read_codes

    (tmp_path / f"{LATIN1}.png").write_bytes(b"x")
    codes = _codes_file(tmp_path / "codes.h5")
    new = Split(
        pack_bits(np.zeros((1, BITS))),
        ids=np.array([777]),
        labels=np.array([1]),
        paths=[f"{LATIN1}.png"],
    )
    append_codes(codes, "database", new)
    path = read_codes(codes).splits["database"].paths[-1]
    assert path == f"{LATIN1}.png" and (tmp_path / path).read_bytes() == b"x"
