"""Bad input and faults across every command: one sentence, a non-zero exit, nothing lost.

Every case runs one ``fghash`` command in-process (click's ``CliRunner``) and checks:

* the exit status (2 for anything the user can fix, OS errors included);
* stderr holds exactly one ``Error: ...`` line, one sentence, and no traceback (log
  lines and click's usage lines aside), containing the expected words;
* every file that existed before is unchanged, and nothing was added (nothing
  half-written left behind) in the case's folder, the shared inputs, and the mounts.

Shared inputs are built once per module: small codes files, flat and IVF bundles, and a
tiny trained run (the quick demo: ResNet-18, random init, 32-px images, one epoch).
Read-only folders and a full disk are real: tmpfs mounts (we may run as root, where
``chmod`` blocks nothing); without permission to mount, those cases skip with a reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("faiss")

from fghash.cli import main  # noqa: E402
from fghash.codes import Split, make_codes_file, write_codes  # noqa: E402

LONG = "x" * 300  # longer than NAME_MAX (255) on every common file system


# --- shared inputs -------------------------------------------------------------------


def _codes(path: Path, bits: int, n: int, nq: int, seed: int, method: str = "a2net") -> Path:
    rng = np.random.default_rng(seed)
    nb = (bits + 7) // 8
    mask = np.uint8((1 << (bits % 8)) - 1) if bits % 8 else np.uint8(255)

    def split(m: int, first: int) -> Split:
        codes = rng.integers(0, 256, (m, nb), dtype=np.uint8)
        codes[:, -1] &= mask
        return Split(
            codes=codes,
            ids=np.arange(first, first + m),
            labels=rng.integers(0, 4, m),
            features=rng.standard_normal((m, 8)).astype(np.float32),
            features_kind="relaxed_code",
        )

    cf = make_codes_file(bits, split(n, 0), split(nq, 10_000), method=method, config={"seed": seed})
    return write_codes(path, cf)


def _mount(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    return r.returncode == 0


def _bind_read_only(src: Path, dst: Path) -> bool:
    dst.mkdir()
    ok = subprocess.run(["mount", "--bind", str(src), str(dst)], capture_output=True)
    if ok.returncode != 0:
        return False
    ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(dst)], capture_output=True)
    if ro.returncode != 0:
        subprocess.run(["umount", "-l", str(dst)], capture_output=True)
        return False
    return True


def _fill(path: Path) -> None:
    """Fill the file system at ``path`` completely."""
    with open(path / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from index import build_bundle

    root = tmp_path_factory.mktemp("world")
    w: dict[str, Path] = {"root": root}
    w["codes"] = _codes(root / "codes12.h5", 12, 200, 10, 0)
    w["codes16"] = _codes(root / "codes16.h5", 16, 200, 10, 1)
    w["itq"] = _codes(root / "itq12.h5", 12, 200, 10, 2, method="itq")
    w["small"] = _codes(root / "small12.h5", 12, 20, 4, 3)
    w["noquery"] = write_codes(
        root / "noquery.h5", make_codes_file(12, Split(np.zeros((5, 2), np.uint8)))
    )
    dup = _codes(root / "dup12.h5", 12, 50, 4, 4)
    with h5py.File(dup, "r+") as f:
        f["database/ids"][1] = f["database/ids"][0]
    w["dup"] = dup
    w["text"] = root / "notes.txt"
    w["text"].write_text("not a codes file\n")
    with h5py.File(root / "other.h5", "w") as f:
        f["x"] = np.arange(3)
    w["other"] = root / "other.h5"
    build_bundle(w["codes"], root / "flat", device="cpu")
    build_bundle(w["codes"], root / "ivf", kind="ivf", nlist=4, device="cpu")
    w["flat"], w["ivf"] = root / "flat", root / "ivf"
    demo = CliRunner().invoke(
        main, ["demo", "--quick", "--device", "cpu", "--out", str(root / "demo")]
    )
    assert demo.exit_code == 0, demo.output
    w["demo_output"] = demo.output  # type: ignore[assignment]
    w["demo"], w["run"], w["data"] = root / "demo", root / "demo" / "run", root / "demo" / "data"
    (root / "runs2" / "bits-12").mkdir(parents=True)
    (root / "runs2" / "bits-12" / "config.json").write_text("{}")
    (root / "runs2" / "bits-16").mkdir()
    (root / "runs2" / "bits-16" / "config.json").write_text("{}")
    w["runs2"] = root / "runs2"
    w["emptydir"] = root / "emptydir"
    w["emptydir"].mkdir()
    from fghash.data.synthetic import generate_synthetic

    w["otherdata"] = generate_synthetic(
        root / "otherdata",
        num_classes=4,
        train_per_class=8,
        test_per_class=4,
        image_size=32,
        seed=7,
    )

    mounts = []
    try:
        for key, options in (("ro", "ro,size=1m"), ("full", "size=256k")):
            if _mount(root / f"mnt-{key}", options):
                w[key] = root / f"mnt-{key}"
                mounts.append(w[key])
        if "full" in w:  # a bundle to grow on a full disk
            shutil.copytree(w["flat"], w["full"] / "b")
            _fill(w["full"])
        shutil.copytree(w["flat"], root / "ro-src" / "b")  # and one on a read-only mount
        if "ro" in w and _bind_read_only(root / "ro-src", root / "mnt-robind"):
            w["robind"] = root / "mnt-robind"
            mounts.append(w["robind"])
        yield w
    finally:
        for m in mounts:
            subprocess.run(["umount", "-l", str(m)], capture_output=True)


# --- the matrix ----------------------------------------------------------------------


@dataclass
class Case:
    name: str
    args: list[str]  # "{key}" is replaced by world[key] or, for {tmp}, the case's folder
    needle: str  # expected in the Error line (case-insensitive)
    code: int = 2
    setup: Callable[[Path, dict[str, Path]], None] | None = None
    needs: str | None = None  # "ro", "robind" or "full": a mount the case writes into


def _copy_bundle(src: str, dst: str = "b") -> Callable[[Path, dict[str, Path]], None]:
    def setup(tmp: Path, w: dict[str, Path]) -> None:
        shutil.copytree(w[src], tmp / dst)

    return setup


def _corrupt(offset: int = 100, size: int | None = None) -> Callable[[Path, dict[str, Path]], None]:
    """Copy the flat bundle to tmp/b and damage its index.faiss (same size, or truncated)."""

    def setup(tmp: Path, w: dict[str, Path]) -> None:
        shutil.copytree(w["flat"], tmp / "b")
        p = tmp / "b" / "index.faiss"
        data = bytearray(p.read_bytes())
        if size is not None:
            data = data[:size]
        else:
            data[offset : offset + 100] = bytes(255 - b for b in data[offset : offset + 100])
        p.write_bytes(bytes(data))

    return setup


def _edit_meta(**changes: object) -> Callable[[Path, dict[str, Path]], None]:
    def setup(tmp: Path, w: dict[str, Path]) -> None:
        shutil.copytree(w["flat"], tmp / "b")
        meta = json.loads((tmp / "b" / "index.json").read_text())
        meta.update(changes)
        (tmp / "b" / "index.json").write_text(json.dumps(meta))

    return setup


def _write(name: str, text: str = "mine\n") -> Callable[[Path, dict[str, Path]], None]:
    def setup(tmp: Path, w: dict[str, Path]) -> None:
        p = tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    return setup


def _rm(path_in_b: str) -> Callable[[Path, dict[str, Path]], None]:
    def setup(tmp: Path, w: dict[str, Path]) -> None:
        shutil.copytree(w["flat"], tmp / "b")
        os.unlink(tmp / "b" / path_in_b)

    return setup


def _other_report(tmp: Path, w: dict[str, Path]) -> None:
    (tmp / "rep").mkdir()
    (tmp / "rep" / "report.json").write_text(
        json.dumps({"format": "fghash.bench", "codes": [{"path": "a.h5", "checksum": "sha256:0"}]})
    )
    (tmp / "rep" / "report.md").write_text("# an older report\n")


def _damaged_run(tmp: Path, w: dict[str, Path]) -> None:
    shutil.copytree(w["run"], tmp / "run")
    (tmp / "run" / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")


def _empty_run(tmp: Path, w: dict[str, Path]) -> None:
    (tmp / "run").mkdir()


BENCH = ["--index-types", "flat", "--runs", "1", "--latency-queries", "1"]
TRAIN = ["--dataset", "synthetic", "--data-root", "{data}", "--backbone", "resnet18"]
TRAIN += ["--image-size", "32", "--max-iter", "1", "--epochs", "1", "--num-samples", "8"]
TRAIN += ["--weights", "none"]
ENC = ["encode", "{run}", "--device", "cpu", "--features", "none"]
EXPLAIN = ["explain", "{demo}/codes.h5", "--device", "cpu", "--rotations", "2"]

CASES = [
    # --- the command group ---
    Case("no-such-command", ["frobnicate"], "no such command"),
    Case("unknown-global-option", ["--colour", "info", "{codes}"], "no such option"),
    # --- info ---
    Case("info-missing", ["info", "{tmp}/nope.h5"], "no such codes file"),
    Case("info-plain-folder", ["info", "{emptydir}"], "not an fghash index bundle"),
    Case("info-text-file", ["info", "{text}"], "not an hdf5"),
    Case("info-other-hdf5", ["info", "{other}"], "fghash.codes"),
    Case("info-truncated-index", ["info", "{tmp}/b"], "truncated", setup=_corrupt(size=40)),
    Case("info-corrupt-index", ["info", "{tmp}/b"], "sha-256", setup=_corrupt()),
    Case("info-verify-corrupt", ["info", "--verify", "{tmp}/b"], "sha-256", setup=_corrupt(200)),
    Case("info-no-items", ["info", "{tmp}/b"], "items.h5", setup=_rm("items.h5")),
    Case("info-no-index-file", ["info", "{tmp}/b"], "no such file", setup=_rm("index.faiss")),
    Case("info-bad-json", ["info", "{tmp}/b"], "not valid json", setup=_write("b/index.json", "{")),
    Case("info-version", ["info", "{tmp}/b"], "version", setup=_edit_meta(version=99)),
    Case("info-duplicate-ids", ["info", "{dup}"], "unique"),
    Case("info-format", ["info", "--format", "xml", "{codes}"], "invalid value"),
    # --- build-index ---
    Case("build-missing", ["build-index", "{tmp}/nope.h5", "--out", "{tmp}/i"], "no such"),
    Case("build-text-file", ["build-index", "{text}", "--out", "{tmp}/i"], "not an hdf5"),
    Case("build-other-hdf5", ["build-index", "{other}", "--out", "{tmp}/i"], "fghash.codes"),
    Case("build-type", ["build-index", "{codes}", "--out", "{tmp}/i", "--type", "lsh"], "lsh"),
    Case(
        "build-ivf-too-small",
        ["build-index", "{small}", "--out", "{tmp}/i", "--type", "ivf"],
        "at least 39",
    ),
    Case(
        "build-nlist-0",
        ["build-index", "{codes}", "--out", "{tmp}/i", "--type", "ivf", "--nlist", "0"],
        "nlist",
    ),
    Case(
        "build-nlist-big",
        ["build-index", "{codes}", "--out", "{tmp}/i", "--type", "ivf", "--nlist", "1000"],
        "--nlist",
    ),
    Case("build-split", ["build-index", "{codes}", "--out", "{tmp}/i", "--split", "x"], "x"),
    Case(
        "build-out-is-file",
        ["build-index", "{codes}", "--out", "{tmp}/mine.txt"],
        "already exists",
        setup=_write("mine.txt"),
    ),
    Case(
        "build-force-foreign",
        ["build-index", "{codes}", "--out", "{tmp}/mine", "--force"],
        "not an fghash index bundle",
        setup=_write("mine/notes.txt"),
    ),
    Case(
        "build-existing-bundle",
        ["build-index", "{codes}", "--out", "{tmp}/b"],
        "--force",
        setup=_copy_bundle("flat"),
    ),
    Case("build-no-parent", ["build-index", "{codes}", "--out", "{tmp}/a/b/i"], "does not exist"),
    Case("build-read-only", ["build-index", "{codes}", "--out", "{ro}/i"], "read-only", needs="ro"),
    Case(
        "build-disk-full", ["build-index", "{codes}", "--out", "{full}/i"], "no space", needs="full"
    ),
    Case("build-long-name", ["build-index", "{codes}", "--out", "{tmp}/" + LONG], "too long"),
    Case("build-duplicate-ids", ["build-index", "{dup}", "--out", "{tmp}/i"], "unique"),
    Case(
        "build-hnsw-m",
        ["build-index", "{codes}", "--out", "{tmp}/i", "--type", "hnsw", "--hnsw-m", "0"],
        "hnsw",
    ),
    Case(
        "build-hash-b",
        ["build-index", "{codes}", "--out", "{tmp}/i", "--type", "hash", "--hash-b", "99"],
        "b",
    ),
    Case("build-gpu", ["build-index", "{codes}", "--out", "{tmp}/i", "--device", "gpu"], "gpu"),
    Case(
        "build-no-query-split-ok-but-empty",
        ["build-index", "{noquery}", "--out", "{tmp}/i", "--split", "query"],
        "query",
    ),
    # --- search ---
    Case("search-missing", ["search", "{tmp}/nope", "--code", "000"], "no such index bundle"),
    Case("search-no-query", ["search", "{flat}"], "either"),
    Case("search-both", ["search", "{flat}", "--codes", "{codes}", "--code", "0000"], "either"),
    Case("search-k-0", ["search", "{flat}", "--code", "0000", "-k", "0"], "positive"),
    Case("search-k-text", ["search", "{flat}", "--code", "0000", "-k", "ten"], "not a valid"),
    Case("search-k-big", ["search", "{flat}", "--code", "0000", "--k", "201"], "larger than"),
    Case("search-hex-odd", ["search", "{flat}", "--code", "3fa"], "odd number"),
    Case("search-hex-bad", ["search", "{flat}", "--code", "zz00"], "not a hexadecimal"),
    Case("search-hex-0x-odd", ["search", "{flat}", "--code", "0x3fa"], "odd number"),
    Case("search-hex-width", ["search", "{flat}", "--code", "3fa0c2"], "12-bit"),
    Case("search-hex-padding", ["search", "{flat}", "--code", "fff0"], "unused"),
    Case("search-bits", ["search", "{flat}", "--codes", "{codes16}"], "16-bit"),
    Case("search-split", ["search", "{flat}", "--codes", "{codes}", "--split", "x"], "x"),
    Case("search-codes-missing", ["search", "{flat}", "--codes", "{tmp}/q.h5"], "no such"),
    Case("search-codes-text", ["search", "{flat}", "--codes", "{text}"], "not an hdf5"),
    Case(
        "search-nprobe-big",
        ["search", "{ivf}", "--code", "0000", "--nprobe", "999"],
        "more than the 4 lists",
    ),
    Case("search-nprobe-0", ["search", "{ivf}", "--code", "0000", "--nprobe", "0"], "nprobe"),
    Case("search-nprobe-flat", ["search", "{flat}", "--code", "0000", "--nprobe", "2"], "ivf"),
    Case("search-ef-flat", ["search", "{flat}", "--code", "0000", "--ef-search", "8"], "hnsw"),
    Case("search-nflip-flat", ["search", "{flat}", "--code", "0000", "--nflip", "1"], "hash"),
    Case("search-limit-0", ["search", "{flat}", "--codes", "{codes}", "--limit", "0"], "limit"),
    Case("search-format", ["search", "{flat}", "--code", "0000", "--format", "xml"], "invalid"),
    Case(
        "search-corrupt",
        ["search", "{tmp}/b", "--code", "0000"],
        "sha-256",
        setup=_corrupt(),
    ),
    Case(
        "search-verify-corrupt",
        ["search", "{tmp}/b", "--code", "0000", "--verify"],
        "sha-256",
        setup=_corrupt(150),
    ),
    Case(
        "search-truncated",
        ["search", "{tmp}/b", "--code", "0000"],
        "truncated",
        setup=_corrupt(size=100),
    ),
    Case(
        "search-meta-ntotal",
        ["search", "{tmp}/b", "--code", "0000"],
        "inconsistent",
        setup=_edit_meta(ntotal=999),
    ),
    Case("search-not-bundle", ["search", "{emptydir}", "--code", "0000"], "not an fghash"),
    # --- bench ---
    Case("bench-missing", ["bench", "{tmp}/nope.h5", "--out", "{tmp}/r"], "no such"),
    Case("bench-no-query", ["bench", "{noquery}", "--out", "{tmp}/r"], "no query split"),
    Case("bench-text", ["bench", "{text}", "--out", "{tmp}/r"], "not an hdf5"),
    Case("bench-k-0", ["bench", "{codes}", "--out", "{tmp}/r", "--k", "0", *BENCH], "positive"),
    Case("bench-k-text", ["bench", "{codes}", "--out", "{tmp}/r", "-k", "1,x"], "comma"),
    Case("bench-k-big", ["bench", "{codes}", "--out", "{tmp}/r", "--k", "1,5000"], "larger than"),
    Case(
        "bench-types", ["bench", "{codes}", "--out", "{tmp}/r", "--index-types", "ivf,lsh"], "lsh"
    ),
    Case("bench-runs-0", ["bench", "{codes}", "--out", "{tmp}/r", "--runs", "0"], "--runs"),
    Case(
        "bench-threads-0", ["bench", "{codes}", "--out", "{tmp}/r", "--threads", "0"], "--threads"
    ),
    Case(
        "bench-latency",
        ["bench", "{codes}", "--out", "{tmp}/r", "--latency-queries", "-1"],
        "--latency-queries",
    ),
    Case("bench-out-file", ["bench", "{codes}", "--out", "{text}", *BENCH], "not a folder"),
    Case(
        "bench-user-report",
        ["bench", "{codes}", "--out", "{tmp}/rep", *BENCH],
        "did not write",
        setup=_write("rep/report.md"),
    ),
    Case(
        "bench-other-report",
        ["bench", "{codes}", "--out", "{tmp}/rep", *BENCH],
        "other inputs",
        setup=_other_report,
    ),
    Case(
        "bench-read-only", ["bench", "{codes}", "--out", "{ro}/r", *BENCH], "read-only", needs="ro"
    ),
    Case(
        "bench-disk-full",
        ["bench", "{codes}", "--out", "{full}/r", *BENCH],
        "no space",
        needs="full",
    ),
    Case("bench-long-name", ["bench", "{codes}", "--out", "{tmp}/" + LONG, *BENCH], "too long"),
    Case("bench-device", ["bench", "{codes}", "--out", "{tmp}/r", "--device", "tpu"], "invalid"),
    # --- encode ---
    Case("encode-no-run", ["encode", "{tmp}/nope", "--out", "{tmp}/c.h5"], "does not exist"),
    Case(
        "encode-empty-run",
        ["encode", "{tmp}/run", "--out", "{tmp}/c.h5"],
        "config",
        setup=_empty_run,
    ),
    Case("encode-several-runs", ["encode", "{runs2}", "--out", "{tmp}/c.h5"], "several runs"),
    Case(
        "encode-damaged-checkpoint",
        ["encode", "{tmp}/run", "--out", "{tmp}/c.h5", "--device", "cpu"],
        "checkpoint",
        setup=_damaged_run,
    ),
    Case(
        "encode-data-root-missing",
        [*ENC, "--out", "{tmp}/c.h5", "--data-root", "{tmp}/none"],
        "never generates",
    ),
    Case(
        "encode-data-root-empty",
        [*ENC, "--out", "{tmp}/c.h5", "--data-root", "{emptydir}"],
        "no synthetic data set",
    ),
    Case(
        "encode-data-root-other",
        [*ENC, "--out", "{tmp}/c.h5", "--data-root", "{otherdata}"],
        "not the data set",
    ),
    Case("encode-out-exists", [*ENC, "--out", "{tmp}/c.h5"], "--force", setup=_write("c.h5")),
    Case("encode-no-parent", [*ENC, "--out", "{tmp}/a/c.h5"], "does not exist"),
    Case("encode-read-only", [*ENC, "--out", "{ro}/c.h5"], "read-only", needs="ro"),
    Case("encode-disk-full", [*ENC, "--out", "{full}/c.h5"], "no space", needs="full"),
    Case("encode-long-name", [*ENC, "--out", "{tmp}/" + LONG + ".h5"], "too long"),
    Case("encode-database", [*ENC, "--out", "{tmp}/c.h5", "--database", "all"], "invalid"),
    Case("encode-batch-size", [*ENC, "--out", "{tmp}/c.h5", "--batch-size", "0"], "batch"),
    # --- train ---
    Case(
        "train-dataset",
        ["train", "--dataset", "imagenet", "--data-root", "{tmp}", "--out", "{tmp}/r"],
        "imagenet",
    ),
    Case("train-bits-0", ["train", *TRAIN, "--out", "{tmp}/r", "--bits", "0"], "bits"),
    Case("train-bits-text", ["train", *TRAIN, "--out", "{tmp}/r", "--bits", "twelve"], "bits"),
    Case(
        "train-milestones",
        ["train", *TRAIN, "--out", "{tmp}/r", "--lr-milestones", "a"],
        "--lr-milestones",
    ),
    Case(
        "train-cub-missing",
        ["train", "--dataset", "cub200", "--data-root", "{tmp}/cub", "--out", "{tmp}/r"],
        "cub",
    ),
    Case("train-out-has-run", ["train", *TRAIN, "--out", "{run}"], "--resume"),
    Case("train-resume-nothing", ["train", *TRAIN, "--out", "{tmp}/r", "--resume"], "resume"),
    Case("train-method", ["train", *TRAIN, "--out", "{tmp}/r", "--method", "vit"], "vit"),
    Case("train-lr", ["train", *TRAIN, "--out", "{tmp}/r", "--lr", "-1"], "lr"),
    Case(
        "train-val-fraction", ["train", *TRAIN, "--out", "{tmp}/r", "--val-fraction", "1.5"], "val"
    ),
    Case("train-backbone", ["train", *TRAIN, "--out", "{tmp}/r", "--backbone", "vgg"], "vgg"),
    Case("train-read-only", ["train", *TRAIN, "--out", "{ro}/r"], "read-only", needs="ro"),
    Case("train-disk-full", ["train", *TRAIN, "--out", "{full}/r"], "no space", needs="full"),
    Case("train-device", ["train", *TRAIN, "--out", "{tmp}/r", "--device", "tpu"], "invalid"),
    # --- baseline ---
    Case(
        "baseline-method", ["baseline", "pq", "--features", "{codes}", "--out", "{tmp}/c.h5"], "pq"
    ),
    Case(
        "baseline-features-missing",
        ["baseline", "itq", "--features", "{tmp}/f.h5", "--out", "{tmp}/c.h5"],
        "does not exist",
    ),
    Case(
        "baseline-features-text",
        ["baseline", "itq", "--features", "{text}", "--out", "{tmp}/c.h5"],
        "hdf5",
    ),
    Case(
        "baseline-no-features",
        ["baseline", "itq", "--features", "{noquery}", "--out", "{tmp}/c.h5"],
        "features",
    ),
    Case(
        "baseline-bits-0",
        ["baseline", "lsh", "--features", "{codes}", "--bits", "0", "--out", "{tmp}/c.h5"],
        "bits",
    ),
    Case(
        "baseline-out-exists",
        ["baseline", "lsh", "--features", "{codes}", "--bits", "8", "--out", "{tmp}/c.h5"],
        "--force",
        setup=_write("c.h5"),
    ),
    Case(
        "baseline-read-only",
        ["baseline", "lsh", "--features", "{codes}", "--bits", "8", "--out", "{ro}/c.h5"],
        "read-only",
        needs="ro",
    ),
    Case(
        "baseline-disk-full",
        ["baseline", "lsh", "--features", "{codes}", "--bits", "8", "--out", "{full}/c.h5"],
        "no space",
        needs="full",
    ),
    # --- add ---
    Case("add-missing-bundle", ["add", "{tmp}/nope", "{codes}"], "no such index bundle"),
    Case(
        "add-missing-new", ["add", "{tmp}/b", "{tmp}/new.h5"], "no such", setup=_copy_bundle("flat")
    ),
    Case("add-neither", ["add", "{tmp}/b"], "either", setup=_copy_bundle("flat")),
    Case(
        "add-images-no-run",
        ["add", "{tmp}/b", "--images", "{text}"],
        "--run",
        setup=_copy_bundle("flat"),
    ),
    Case("add-text-file", ["add", "{tmp}/b", "{text}"], "hdf5", setup=_copy_bundle("flat")),
    Case(
        "add-other-width",
        ["add", "{tmp}/b", "{codes16}", "--split", "query"],
        "16",
        setup=_copy_bundle("flat"),
    ),
    Case(
        "add-duplicate-ids",
        ["add", "{tmp}/b", "{codes}"],
        "already in the index",
        setup=_copy_bundle("flat"),
    ),
    Case(
        "add-split", ["add", "{tmp}/b", "{codes}", "--split", "x"], "x", setup=_copy_bundle("flat")
    ),
    Case(
        "add-corrupt-bundle",
        ["add", "{tmp}/b", "{codes}", "--split", "query"],
        "sha-256",
        setup=_corrupt(),
    ),
    Case(
        "add-read-only",
        ["add", "{robind}/b", "{codes}", "--split", "query", "--no-codes-file"],
        "read-only",
        needs="robind",
    ),
    Case(
        "add-disk-full",
        ["add", "{full}/b", "{codes}", "--split", "query", "--no-codes-file"],
        "no space",
        needs="full",
    ),
    Case(
        "add-disk-full-codes-file",
        ["add", "{full}/b", "{codes}", "--split", "query"],
        "no space",
        needs="full",
    ),
    # --- explain ---
    Case("explain-missing", ["explain", "{tmp}/nope.h5", "--out", "{tmp}/e"], "no such"),
    Case("explain-split", [*EXPLAIN, "--out", "{tmp}/e", "--split", "x"], "no split"),
    Case("explain-bit-range", [*EXPLAIN, "--out", "{tmp}/e", "--bits-to-show", "99"], "0..11"),
    Case("explain-bit-format", [*EXPLAIN, "--out", "{tmp}/e", "--bits-to-show", "a-b"], "0,3,5-7"),
    Case("explain-per-bit-0", [*EXPLAIN, "--out", "{tmp}/e", "--per-bit", "0"], "at least 1"),
    Case("explain-rotations-0", [*EXPLAIN, "--out", "{tmp}/e", "--rotations", "0"], "at least 1"),
    Case("explain-queries-text", [*EXPLAIN, "--out", "{tmp}/e", "--queries", "a,b"], "ids"),
    Case(
        "explain-queries-unknown",
        [*EXPLAIN, "--out", "{tmp}/e", "--queries", "99999"],
        "not in the query split",
    ),
    Case(
        "explain-out-foreign",
        [*EXPLAIN, "--out", "{tmp}/e"],
        "other files",
        setup=_write("e/mine.txt"),
    ),
    Case("explain-out-file", [*EXPLAIN, "--out", "{text}"], "not a folder"),
    Case(
        "explain-attributes-from",
        [*EXPLAIN, "--out", "{tmp}/e", "--attributes-from", "{codes}"],
        "no attributes",
    ),
    Case(
        "explain-data-root",
        [*EXPLAIN, "--out", "{tmp}/e", "--data-root", "{tmp}/none"],
        "not a folder",
    ),
    Case("explain-read-only", [*EXPLAIN, "--out", "{ro}/e"], "read-only", needs="ro"),
    Case("explain-disk-full", [*EXPLAIN, "--out", "{full}/e"], "no space", needs="full"),
    Case("explain-long-name", [*EXPLAIN, "--out", "{tmp}/" + LONG], "too long"),
    Case("search-engine", ["search", "{flat}", "--code", "0000", "--engine", "x"], "invalid"),
    Case(
        "search-engine-ivf",
        ["search", "{ivf}", "--code", "0000", "--engine", "tensor", "--nprobe", "999"],
        "more than the 4 lists",
    ),
    # --- search by image ---
    Case("search-image-no-run", ["search", "{flat}", "--image", "{text}"], "--run"),
    Case(
        "search-image-not-image",
        ["search", "{demo}/index", "--image", "{text}", "--run", "{run}", "--device", "cpu"],
        "could not be read as an image",
    ),
    Case(
        "search-image-missing",
        ["search", "{demo}/index", "--image", "{tmp}/nope.png", "--run", "{run}"],
        "no such image",
    ),
    # --- demo ---
    Case("demo-out-file", ["demo", "--quick", "--out", "{text}"], "is a file"),
    Case(
        "demo-foreign-folder",
        ["demo", "--quick", "--out", "{tmp}/d"],
        "holds no fghash demo",
        setup=_write("d/mine.txt"),
    ),
    Case(
        "demo-other-settings",
        ["demo", "--quick", "--bits", "16", "--out", "{demo}"],
        "other settings",
    ),
    Case("demo-read-only", ["demo", "--quick", "--out", "{ro}/d"], "read-only", needs="ro"),
    Case("demo-bits-0", ["demo", "--quick", "--bits", "0", "--out", "{tmp}/d"], "bits"),
]


def _snapshot(*roots: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``roots``: size and content digest (size and mtime for big ones)."""
    out: dict[str, tuple[int, str]] = {}
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for name in files:
                p = Path(dirpath) / name
                st = p.stat()
                if st.st_size > 1 << 20:
                    digest = str(st.st_mtime_ns)
                else:
                    digest = hashlib.sha256(p.read_bytes()).hexdigest()
                out[str(p)] = (st.st_size, digest)
    return out


def _error_line(stderr: str) -> str:
    """The one ``Error:`` line; everything else must be log or usage lines."""
    other, errors = [], []
    for line in stderr.splitlines():
        if line.startswith("Error: "):
            errors.append(line)
        elif line.strip() and not line.startswith(("INFO", "WARNING", "DEBUG", "Usage:", "Try ")):
            other.append(line)
    assert "Traceback" not in stderr, stderr
    assert len(errors) == 1, stderr
    assert not other, stderr
    return errors[0]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, world: dict[str, Path], tmp_path: Path) -> None:
    if case.needs and case.needs not in world:
        pytest.skip(f"cannot mount a {case.needs} tmpfs here (needs root and mount)")
    if case.setup is not None:
        case.setup(tmp_path, world)
    keys = {k: str(v) for k, v in world.items()} | {"tmp": str(tmp_path)}
    args = [a.format(**keys) for a in case.args]
    roots = [tmp_path, world["root"]]
    before = _snapshot(*roots)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == case.code, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    line = _error_line(result.stderr)
    assert case.needle.lower() in line.lower(), line
    body = line[len("Error: ") :]
    assert body.endswith((".", "?")), line
    assert _snapshot(*roots) == before, "a file changed, appeared or disappeared"


def test_matrix_is_large_enough() -> None:
    assert len({c.name for c in CASES}) == len(CASES) >= 80


# --- leftovers, warnings, messages and progress (beyond one-sentence errors) -----------


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_dead_processes_are_removed(world: dict[str, Path], tmp_path):
    from fghash.util.atomic import remove_stale

    dead, alive = _dead_pid(), os.getpid()
    stale_bundle = tmp_path / f".i.{dead}-abcdefgh.tmp"
    stale_bundle.mkdir()
    (stale_bundle / "index.faiss").write_bytes(b"half")
    live_bundle = tmp_path / f".i.{alive}-abcdefgh.tmp"
    live_bundle.mkdir()
    (tmp_path / "checkpoints").mkdir()
    stale_ckpt = tmp_path / "checkpoints" / f".last.pt.{dead}-a1b2c3d4.tmp"
    stale_ckpt.write_bytes(b"x" * 100)
    not_ours = tmp_path / ".i.backup"  # no pid: not a name fghash makes
    not_ours.write_text("keep")

    r = CliRunner().invoke(main, ["build-index", str(world["codes"]), "--out", str(tmp_path / "i")])
    assert r.exit_code == 0, r.output
    assert not stale_bundle.exists() and live_bundle.exists() and not_ours.exists()
    assert remove_stale(tmp_path / "checkpoints", "last.pt") == [stale_ckpt]

    rep = tmp_path / "rep"
    rep.mkdir()
    stale_png = rep / f".pr_curves.png.{dead}-zz99yy88.png"
    stale_png.write_bytes(b"png")
    r = CliRunner().invoke(main, ["bench", str(world["small"]), "--out", str(rep), *BENCH])
    assert r.exit_code == 0, r.output
    assert not stale_png.exists() and (rep / "report.json").is_file()


def test_interrupted_checkpoint_write_leaves_nothing(tmp_path, monkeypatch) -> None:
    import torch

    from fghash.runs import checkpoint

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        checkpoint.save_checkpoint(tmp_path / "last.pt", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_queries_from_another_method_or_run_warn(world: dict[str, Path], tmp_path) -> None:
    flat = str(world["flat"])
    r = CliRunner().invoke(main, ["search", flat, "--codes", str(world["itq"]), "--limit", "1"])
    assert r.exit_code == 0
    assert "WARNING" in r.stderr and "itq codes" in r.stderr and str(world["codes"]) in r.stderr
    r = CliRunner().invoke(main, ["search", flat, "--codes", str(world["small"]), "--limit", "1"])
    assert r.exit_code == 0 and "another" in r.stderr  # same method, another config
    r = CliRunner().invoke(main, ["search", flat, "--codes", str(world["codes"]), "--limit", "1"])
    assert r.exit_code == 0 and "WARNING" not in r.stderr


def test_info_and_search_verify_a_sound_bundle(world: dict[str, Path]) -> None:
    r = CliRunner().invoke(main, ["info", "--verify", str(world["flat"])])
    assert r.exit_code == 0 and "checked: SHA-256" in r.output
    r = CliRunner().invoke(
        main,
        ["search", str(world["ivf"]), "--code", "0x0000", "--verify", "--nprobe", "4", "-k", "3"],
    )
    assert r.exit_code == 0, r.output
    assert "device auto" not in r.stderr  # debug level now


def test_demo_messages(world: dict[str, Path]) -> None:
    out = str(world["demo_output"])
    assert "1 outer iteration x 1 epoch over" in out
    assert "training 12 bits, epochs: 1/1 done" in out  # a progress line, stderr not a tty
    assert "encoding, splits: 2/2 done" in out
    assert out.count("built flat index") == 0  # build-index's own line says it, once
    nxt = out.split("next:")[1]
    assert "my-codes.h5" not in nxt
    for line in nxt.strip().splitlines():
        written = line.split("--out ")[1].split()[0] if "--out" in line else None
        assert written is None or written.startswith(str(world["demo"]))


def test_bench_skip_note_names_its_own_option(world: dict[str, Path], tmp_path) -> None:
    r = CliRunner().invoke(
        main,
        [
            "bench",
            str(world["small"]),
            "--out",
            str(tmp_path / "r"),
            "--index-types",
            "ivf",
            "--runs",
            "1",
            "--latency-queries",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    skipped = [
        row["skipped"] for row in report["codes"][0]["throughput"]["rows"] if "skipped" in row
    ]
    assert skipped and "--index-types" in skipped[0] and "--type" not in skipped[0]


def test_help_spells_options_alike() -> None:
    for cmd in ("search", "bench"):
        r = CliRunner().invoke(main, [cmd, "-h"])
        assert "-k, --k" in r.output, cmd
    r = CliRunner().invoke(main, ["train", "-h"])
    assert "synthetic" in r.output and "cub200" in r.output and "a2net (the paper)" in r.output


def test_progress_lines() -> None:
    import logging

    from fghash.util.progress import Progress, format_seconds

    assert [format_seconds(s) for s in (5, 65, 3725)] == ["5 s", "1 min 05 s", "1 h 02 min"]
    p = Progress("work", 4, done=1, logger=logging.getLogger("t"))
    assert "about" not in p.line()  # no estimate before a step of this process
    p._t0 -= 10  # ten seconds for this process's one step, two left: about 20 s
    line = p.step("a")
    assert line.startswith("work: 2/4 done (a), 10 s elapsed, about 20 s left")


def test_os_error_sentences() -> None:
    from fghash.errors import os_error_sentence

    tmp = "/data/.codes.h5.1234-abcdefgh.tmp"
    assert os_error_sentence(OSError(30, "Read-only file system", tmp)) == (
        "/data/codes.h5: read-only file system; choose a writable folder."
    )
    h5 = OSError("Unable to create file (unable to open file: name = '/x/y.h5', errno = 28)")
    assert os_error_sentence(h5).startswith("/x/y.h5: no space left on device")
    faiss_msg = OSError("write error in /i/index.faiss: 3 != 8 (No space left on device)")
    assert "no space left" in os_error_sentence(faiss_msg)


def test_encode_takes_moved_data_and_refuses_other_data(world: dict[str, Path], tmp_path) -> None:
    from fghash.data.synthetic import generate_synthetic

    moved = tmp_path / "moved"
    shutil.copytree(world["data"], moved)
    args = ["encode", str(world["run"]), "--device", "cpu", "--features", "none"]
    r = CliRunner().invoke(
        main, [*args, "--out", str(tmp_path / "a.h5"), "--data-root", str(moved)]
    )
    assert r.exit_code == 0, r.output
    # a run written before data.json: the learned codes' training items are compared
    old = tmp_path / "old-run"
    shutil.copytree(world["run"], old)
    (old / "data.json").unlink()
    bigger = generate_synthetic(
        tmp_path / "bigger", num_classes=4, train_per_class=10, test_per_class=4, image_size=32
    )
    r = CliRunner().invoke(
        main,
        ["encode", str(old), "--out", str(tmp_path / "b.h5"), "--data-root", str(bigger)],
    )
    assert r.exit_code == 2 and "learned codes for 32 training items" in r.stderr
    assert not (tmp_path / "b.h5").exists()


def test_progress_lines_can_be_throttled() -> None:
    import logging

    from fghash.util.progress import Progress

    p = Progress("images", 100, logger=logging.getLogger("t"))
    assert p.step(n=10, every=30) is None  # too soon after the start
    p._last_line -= 31
    assert p.step(n=10, every=30).startswith("images: 20/100 done")
    assert p.step(n=10, every=30) is None


def test_stale_synthetic_and_explain_temporaries_are_removed(tmp_path) -> None:
    """A killed data generation leaves `.data.<pid>-….tmp/` beside the set, a killed explain
    a temporary PNG in its report folder; the next run removes both, since the dead
    process's temporaries are not the user's files."""
    from fghash.data.synthetic import generate_synthetic
    from fghash.explain.run import prepare_out

    dead = _dead_pid()
    stale_data = tmp_path / f".data.{dead}-abcdefgh.tmp"
    stale_data.mkdir()
    (stale_data / "half.png").write_bytes(b"png")
    generate_synthetic(tmp_path / "data", num_classes=2, train_per_class=1, test_per_class=1)
    assert not stale_data.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    out = tmp_path / "explain"
    out.mkdir()
    stale_png = out / f".retrieval.png.{dead}-zz99yy88.png"
    stale_png.write_bytes(b"png")
    prepare_out(out, force=False)  # before the fix: "already holds other files"
    assert not stale_png.exists()
