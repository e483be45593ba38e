"""A tiny trained run: `fghash search INDEX --image ...` and `fghash explain --run` encode with it."""

from __future__ import annotations

import glob
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("faiss")

import fghash  # noqa: E402
from fghash.cli import main  # noqa: E402
from fghash.data import generate_synthetic  # noqa: E402
from fghash.runs.config import resolve_config  # noqa: E402
from fghash.training.loop import train  # noqa: E402
from index import load_index, read_bundle_meta  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A tiny trained run (random-init ResNet-18, 32 px), its codes file and index bundle."""
    base = tmp_path_factory.mktemp("search-image")
    root = generate_synthetic(
        base / "birds", num_classes=3, train_per_class=4, test_per_class=2, image_size=32
    )
    cfg = resolve_config(
        "synthetic", "a2net", data_root=str(root), backbone="resnet18", weights="none",
        image_size=32, bits=12, num_attention=2, num_samples=9, batch_size=3, max_iter=1,
        epochs=1, device="cpu", gamma=1.0, lr=1e-3,
    )  # fmt: skip
    run_dir = base / "run"
    train(cfg, run_dir, progress=False)
    codes = base / "codes.h5"
    r = run("encode", run_dir, "--out", codes, "--database", "encode", "--device", "cpu")
    assert r.exit_code == 0, r.output
    bundle = base / "idx"
    assert run("build-index", codes, "--out", bundle, "--device", "cpu").exit_code == 0
    images = sorted((root / "images").rglob("test_*.png"))[:3]
    # one image in another format and size, as a user would bring it
    jpg = base / "mine.jpg"
    Image.open(images[0]).convert("RGB").resize((50, 41)).save(jpg)
    return run_dir, bundle, [*images, jpg]


def test_search_by_image_equals_encode_then_index_search(indexed, tmp_path):
    run_dir, bundle, images = indexed
    k = 5
    r = run("search", bundle, *sum((["--image", p] for p in images), []), "--run", run_dir,
            "-k", k, "--format", "jsonl", "--device", "cpu")  # fmt: skip
    assert r.exit_code == 0, r.output
    got = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    # independent path: the Python encoder, then the saved FAISS index directly
    codes = fghash.load(run_dir, device="cpu").encode([str(p) for p in images])
    index, items = load_index(bundle)
    D, I = index.search(codes, k)
    assert len(got) == len(images)
    for q, d_row, i_row, img in zip(got, D, I, images, strict=True):
        assert q["query"]["path"] == str(img)
        assert [h["id"] for h in q["results"]] == [int(items.ids[i]) for i in i_row]
        assert [h["distance"] for h in q["results"]] == [int(d) for d in d_row]


def test_the_bundle_records_its_run_so_run_can_be_left_out(indexed, tmp_path):
    run_dir, bundle, images = indexed
    assert read_bundle_meta(bundle)["codes"]["run"] == str(run_dir.resolve())
    grid = tmp_path / "grid.png"
    r = run("search", bundle, "--image", images[0], "--image", images[1], "-k", 4,
            "--grid", grid, "--device", "cpu")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.output.count("query ") == 2 and f"wrote {grid}" in r.output
    assert f"query 1: {images[0]}" in r.output
    w, h = Image.open(grid).size
    assert w > 4 * 96 and h > 2 * 96  # two rows of a query and four results


def test_image_search_errors_are_one_sentence(indexed, tmp_path):
    run_dir, bundle, images = indexed
    r = run("search", bundle, "--image", tmp_path / "none.png", "--device", "cpu")
    assert r.exit_code == 2 and "no such image file" in r.output and "Traceback" not in r.output
    r = run("search", bundle, "--grid", tmp_path / "g.png", "--code", "000")
    assert r.exit_code == 2 and "go with --image" in r.output
    r = run("search", bundle, "--image", images[0], "--run", tmp_path, "--device", "cpu")
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_explain_encodes_missing_relaxed_values_with_the_run(indexed, tmp_path):
    from fghash.codes import read_codes, write_codes

    run_dir, bundle, _ = indexed
    cf = read_codes(read_bundle_meta(bundle)["codes"]["path"])
    db = cf["database"]
    want = db.features
    db.features = db.features_kind = None  # a codes file without relaxed codes
    bare = write_codes(tmp_path / "bare.h5", cf)
    out = tmp_path / "ex"
    r = run("explain", bare, "--out", out, "--run", run_dir, "--rotations", "2", "--device", "cpu")
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "explain.json").read_text())
    assert doc["relaxed_values"] == "run" and doc["awareness"]["scores_from"] == "relaxed values"
    assert (out / "bits_overview.png").is_file()
    # the relaxed values it ranked by are the run's own outputs for those images
    from fghash.explain.inputs import load_input

    inp = load_input(bare, run=run_dir, device="cpu")
    assert np.allclose(inp.relaxed, want, atol=1e-5)


def _queries(images, folder: Path) -> Path:
    """The fixture's PNG queries copied into one folder, as a user's photos/ would be."""
    folder.mkdir()
    for p in images:
        if p.suffix == ".png":
            (folder / f"{p.parent.name}-{p.name}").write_bytes(p.read_bytes())
    return folder


def _jsonl(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_a_glob_after_image_searches_every_image(indexed, tmp_path):
    run_dir, bundle, images = indexed
    queries = _queries(images, tmp_path / "queries")
    images = sorted(glob.glob(str(queries / "*.png")))  # what `--image queries/*.png` gives
    assert len(images) == 3
    common = ("--run", run_dir, "-k", 3, "--format", "jsonl", "--device", "cpu")
    globbed = run("search", bundle, "--image", *images, *common)
    assert globbed.exit_code == 0, globbed.output
    got = _jsonl(globbed.output)
    assert [q["query"]["path"] for q in got] == images
    # independent path: the Python encoder, then the saved FAISS index
    codes = fghash.load(run_dir, device="cpu").encode(images)
    index, items = load_index(bundle)
    D, I = index.search(codes, 3)
    for q, d_row, i_row in zip(got, D, I, strict=True):
        assert [h["id"] for h in q["results"]] == [int(items.ids[i]) for i in i_row]
        assert [h["distance"] for h in q["results"]] == [int(d) for d in d_row]
    # the same as --image repeated, and as the images alone after the index
    repeated = run("search", bundle, *sum((["--image", p] for p in images), []), *common)
    positional = run("search", bundle, *images, *common)
    assert _jsonl(repeated.output) == got and _jsonl(positional.output) == got


def test_the_command_line_glob_through_a_real_shell(indexed, tmp_path):
    run_dir, bundle, images = indexed
    queries = _queries(images, tmp_path / "queries")
    script = (
        f"{sys.executable} -m fghash search {bundle} --image {queries}/*.png "
        f"--run {run_dir} -k 2 --format jsonl --device cpu"
    )
    proc = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    paths = [q["query"]["path"] for q in _jsonl(proc.stdout)]
    assert paths == sorted(str(p) for p in queries.glob("*.png"))


def test_images_and_codes_together_are_one_sentence(indexed):
    run_dir, bundle, images = indexed
    image = images[0]
    r = run("search", bundle, image, "--code", "000", "--run", run_dir, "--device", "cpu")
    assert r.exit_code == 2 and "not both" in r.output and "Traceback" not in r.output
