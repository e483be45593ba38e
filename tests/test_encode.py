"""Encoding a trained run: a valid schema-v1 codes file, FAISS-indexable, and the Python
encoder (``fghash.load``) gives the same codes as the CLI."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import faiss
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import fghash
from fghash.cli import main
from fghash.codes import read_codes
from fghash.codes.parts import PartStore, parts_folder
from fghash.data import generate_synthetic, load_dataset
from fghash.encoding.encode import encode_run
from fghash.errors import FghashError
from fghash.runs.checkpoint import load_checkpoint
from fghash.runs.config import resolve_config
from fghash.runs.folder import CHECKPOINT
from fghash.training.loop import train

K = 12


def packed_signs(x):
    """Independent packing: bit i of item n is x[n, i] >= 0, little bit order per byte."""
    bits = (np.asarray(x) >= 0).astype(np.uint8)
    nbytes = (bits.shape[1] + 7) // 8
    out = np.zeros((bits.shape[0], nbytes), dtype=np.uint8)
    for i in range(bits.shape[1]):
        out[:, i // 8] |= bits[:, i] << (i % 8)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("enc")
    root = generate_synthetic(
        base / "birds", num_classes=3, train_per_class=4, test_per_class=2, image_size=32
    )
    cfg = resolve_config(
        "synthetic",
        "a2net",
        data_root=str(root),
        backbone="resnet18",
        image_size=32,
        bits=K,
        num_attention=2,
        num_samples=9,
        batch_size=3,
        max_iter=1,
        epochs=1,
        device="cpu",
        gamma=1.0,
        lr=1e-3,
        val_fraction=0.25,
        weights="none",
    )
    run = base / "run"
    train(cfg, run, progress=False)
    return root, run


def encode_cli(run, out, *extra):
    res = CliRunner().invoke(
        main, ["encode", str(run), "--out", str(out), "--device", "cpu", *extra]
    )
    assert res.exit_code == 0, res.output
    return res


def test_encode_writes_the_paper_protocol_codes_file(trained, tmp_path):
    root, run = trained
    out = tmp_path / "codes.h5"
    res = encode_cli(run, out)
    assert "12 bits" in res.output and "query 6" in res.output
    cf = read_codes(out)
    cf.validate()
    assert cf.bits == K and cf.method == "a2net" and cf.config["bits"] == K
    assert cf.config["encode"]["database"] == "learned"

    q, db = cf["query"], cf["database"]
    test = load_dataset("synthetic", root, "test")
    train_ds = load_dataset("synthetic", root, "train")
    assert np.array_equal(q.ids, np.arange(len(test)))
    assert np.array_equal(q.labels, test.labels)
    assert q.paths == test.paths and q.features_kind == "relaxed_code"
    # A few steps from random weights leave BatchNorm's running statistics far from the
    # data, so in eval mode tanh(v) saturates and the query codes may all coincide; the
    # checks below hold either way, and the backbone-feature test compares real numbers.
    assert q.features.shape == (len(test), K) and np.all(np.abs(q.features) <= 1)
    assert np.array_equal(q.codes, packed_signs(q.features))  # codes = sgn(tanh v)

    state = load_checkpoint(run / CHECKPOINT)
    db_idx = state["database_indices"].numpy()
    assert len(db_idx) == 9  # 12 training images less a quarter held out for val
    assert np.array_equal(db.ids, db_idx)
    assert np.array_equal(db.codes, packed_signs(state["B"].numpy()))  # the learned B
    assert np.array_equal(db.codes, packed_signs(np.load(run / "database_codes.npy")))
    assert np.array_equal(db.labels, train_ds.labels[db_idx])
    assert np.array_equal(db.attributes, train_ds.attributes[db_idx])
    assert cf.attribute_names == train_ds.attribute_names

    # The search side accepts it: build-index makes a bundle FAISS reads back.
    bundle = tmp_path / "bundle"
    res = CliRunner().invoke(
        main, ["build-index", str(out), "--out", str(bundle), "--device", "cpu"]
    )
    assert res.exit_code == 0, res.output
    index = faiss.read_index_binary(str(bundle / "index.faiss"))
    assert index.ntotal == len(db_idx)
    # Exact search from FAISS agrees with Hamming distances computed here by hand.
    D, _ = index.search(np.pad(q.codes, ((0, 0), (0, index.code_size - q.codes.shape[1]))), 9)
    qb = np.unpackbits(q.codes, axis=1, bitorder="little")[:, :K].astype(int)
    bb = np.unpackbits(db.codes, axis=1, bitorder="little")[:, :K].astype(int)
    brute = np.sort((qb[:, None, :] != bb[None, :, :]).sum(-1), axis=1)
    assert np.array_equal(D, brute)


def test_encode_database_backbone_features_and_force(trained, tmp_path):
    _, run = trained
    out = tmp_path / "enc.h5"
    encode_cli(run, out, "--database", "encode", "--features", "backbone")
    cf = read_codes(out)
    db = cf["database"]
    assert db.features_kind == "backbone" and db.features.shape == (9, 3 * 512)
    enc = fghash.load(run, device="cpu")
    files = [f"{cf.config['data_root']}/{p}" for p in db.paths]
    assert np.array_equal(db.codes, packed_signs(enc.encode_relaxed(files)))  # not B
    np.testing.assert_allclose(enc.features(files), db.features, rtol=1e-5)
    assert len(np.unique(db.features.round(3), axis=0)) == 9  # one feature per image

    before = out.read_bytes()
    res = CliRunner().invoke(main, ["encode", str(run), "--out", str(out)])
    assert res.exit_code == 2 and "--force" in res.output
    assert out.read_bytes() == before
    encode_cli(run, out, "--force", "--features", "none")
    cf = read_codes(out)
    assert cf["query"].features is None and cf["database"].features is None
    assert cf.config["encode"]["features"] == "none" and len(cf["query"]) == 6


def test_corrupt_query_image_is_skipped_and_counted(trained, tmp_path):
    root, run = trained
    moved = tmp_path / "birds"
    shutil.copytree(root, moved)
    test = load_dataset("synthetic", moved, "test")
    (moved / test.paths[3]).write_bytes(b"this is not a PNG file")
    out = tmp_path / "codes.h5"
    res = encode_cli(run, out, "--data-root", str(moved))
    assert "skipped 1 unreadable image" in res.output
    cf = read_codes(out)
    assert list(cf["query"].ids) == [0, 1, 2, 4, 5]
    assert cf["query"].paths == [p for i, p in enumerate(test.paths) if i != 3]
    assert cf.config["encode"]["skipped"] == {"query": 1, "database": 0}
    # The learned database codes are unaffected.
    full = tmp_path / "full.h5"
    encode_run(run, full, device="cpu", progress=False)
    assert np.array_equal(read_codes(full)["database"].codes, cf["database"].codes)


def test_python_encoder_matches_the_cli(trained, tmp_path):
    root, run = trained
    out = tmp_path / "codes.h5"
    encode_cli(run, out)
    q = read_codes(out)["query"]
    enc = fghash.load(run, device="cpu")
    files = [root / p for p in q.paths]
    assert np.array_equal(enc.encode([str(f) for f in files]), q.codes)
    assert np.array_equal(enc.encode(files[0]), q.codes[:1])
    pil = [Image.open(f) for f in files[:2]]
    assert np.array_equal(enc.encode(pil), q.codes[:2])
    np.testing.assert_allclose(enc.encode_relaxed(files, batch_size=4), q.features, atol=1e-6)
    batch = torch.stack([enc.transform(Image.open(f).convert("RGB")) for f in files])
    assert np.array_equal(enc.encode(batch), q.codes)
    with pytest.raises(FghashError, match="no such image"):
        enc.encode([str(tmp_path / "missing.png")])


def test_encode_errors(trained, tmp_path):
    _, run = trained
    with pytest.raises(FghashError, match="--database"):
        encode_run(run, tmp_path / "x.h5", database="both")
    with pytest.raises(FghashError, match="map to 'train'"):
        encode_run(run, tmp_path / "x.h5", split_map={"database": "test"})
    res = CliRunner().invoke(main, ["encode", str(tmp_path), "--out", str(tmp_path / "x.h5")])
    assert res.exit_code == 2 and "Error:" in res.output
    assert not (tmp_path / "x.h5").exists()
    for bits in (8, 12):
        (tmp_path / "multi" / f"bits-{bits}").mkdir(parents=True)
        (tmp_path / "multi" / f"bits-{bits}" / "config.json").write_text("{}")
    with pytest.raises(FghashError, match="several runs .*bits-12"):
        encode_run(tmp_path / "multi", tmp_path / "x.h5")


def test_encode_the_validation_split(trained, tmp_path):
    _, run = trained
    out = encode_run(
        run,
        tmp_path / "val.h5",
        split_map={"query": "val", "database": "train"},
        device="cpu",
        progress=False,
    )
    cf = read_codes(out)
    val = load_checkpoint(run / CHECKPOINT)["val_indices"].numpy()
    assert np.array_equal(cf["query"].ids, val) and len(val) == 3
    assert not set(cf["query"].ids) & set(cf["database"].ids)


def _same_codes_file(a, b):
    fa, fb = read_codes(a), read_codes(b)
    assert fa.bits == fb.bits and fa.method == fb.method and fa.config == fb.config
    assert sorted(fa.splits) == sorted(fb.splits)
    for name in fa.splits:
        x, y = fa[name], fb[name]
        for field in ("codes", "ids", "labels", "features"):
            assert np.array_equal(getattr(x, field), getattr(y, field)), (name, field)
        assert x.paths == y.paths and x.features_kind == y.features_kind


# Runs `python -m fghash ARGS...` in a child whose part store, after writing its third
# part, touches a marker file and waits: the test then kills the child from outside at
# that known point (nothing in the library knows about it).
_STOP_AFTER_THIRD_PART = """
import runpy, sys, time
from pathlib import Path
from fghash.codes.parts import PartStore

marker, sys.argv = Path(sys.argv[1]), ["fghash", *sys.argv[2:]]
write, written = PartStore.write, []

def write_then_wait(self, *args, **kwargs):
    write(self, *args, **kwargs)
    written.append(1)
    if len(written) == 3:
        marker.touch()
        time.sleep(600)

PartStore.write = write_then_wait
runpy.run_module("fghash", run_name="__main__")
"""


def _kill_after_third_part(argv, marker, timeout=300.0):
    """Start the encode, SIGKILL it once its third part is on disk, return its exit code."""
    child = subprocess.Popen(
        [sys.executable, "-c", _STOP_AFTER_THIRD_PART, str(marker), *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the encode never wrote its third part"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        return child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()


def test_encode_killed_midway_resumes_to_the_same_file(trained, tmp_path):
    _, run = trained
    args = ["encode", str(run), "--device", "cpu"]
    args += ["--database", "encode", "--features", "backbone", "--batch-size", "2"]
    args += ["--chunk-size", "3", "--num-workers", "1"]  # parts of 4 images (2 batches)
    base = [sys.executable, "-m", "fghash", *args]
    whole = tmp_path / "whole.h5"
    subprocess.run([*base, "--out", str(whole)], check=True, timeout=600)
    assert not parts_folder(whole).exists()

    out = tmp_path / "resumed.h5"
    code = _kill_after_third_part([*args, "--out", str(out)], tmp_path / "third-part-written")
    assert code == -signal.SIGKILL  # kill -9 mid-database
    assert not out.exists() and not list(tmp_path.glob("*.h5.tmp*"))
    parts = parts_folder(out)
    done = ["database-000000.npz", "query-000000.npz", "query-000001.npz"]
    assert sorted(p.name for p in parts.glob("*.npz")) == done

    # no --wait: the killed encode's DataLoader workers closed their copies of its lock
    res = subprocess.run([*base, "--out", str(out)], timeout=600, capture_output=True, text=True)
    assert res.returncode == 2 and "--resume" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists() and len(list(parts.glob("*.npz"))) == 3

    subprocess.run([*base, "--out", str(out), "--resume"], check=True, timeout=600)
    assert not parts.exists()
    _same_codes_file(whole, out)
    cf = read_codes(out)
    assert len(cf["query"]) == 6 and cf["database"].features.shape == (9, 3 * 512)


def test_resume_with_other_settings_is_refused(trained, tmp_path):
    _, run = trained
    out = tmp_path / "x.h5"
    PartStore(parts_folder(out), {"chunk_size": 1})  # leftover of another job
    with pytest.raises(FghashError, match="other settings"):
        encode_run(run, out, device="cpu", progress=False, resume=True)
    encode_run(run, out, device="cpu", progress=False, force=True, num_workers=0)  # starts again
    assert out.is_file() and not parts_folder(out).exists()


def test_import_fghash_does_not_import_torch():
    code = "import sys, fghash; assert 'torch' not in sys.modules; assert callable(fghash.load)"
    subprocess.run([sys.executable, "-c", code], check=True)
