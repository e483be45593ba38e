"""`fghash search INDEX --image a.png b.png ...`: what a shell glob gives, as one list."""

from __future__ import annotations

import glob
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("faiss")

import fghash  # noqa: E402
from fghash.cli import main  # noqa: E402
from fghash.data import generate_synthetic  # noqa: E402
from fghash.runs.config import resolve_config  # noqa: E402
from fghash.training.loop import train  # noqa: E402
from index import load_index  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A tiny trained run (random-init ResNet-18, 32 px), its index bundle, and a folder
    of query images."""
    base = tmp_path_factory.mktemp("search-images")
    root = generate_synthetic(
        base / "birds", num_classes=3, train_per_class=3, test_per_class=2, image_size=32
    )
    cfg = resolve_config(
        "synthetic", "a2net", data_root=str(root), backbone="resnet18", weights="none",
        image_size=32, bits=12, num_attention=2, num_samples=9, batch_size=3, max_iter=1,
        epochs=1, device="cpu", gamma=1.0, lr=1e-3,
    )  # fmt: skip
    run_dir = base / "run"
    train(cfg, run_dir, progress=False)
    codes = base / "codes.h5"
    r = run("encode", run_dir, "-o", codes, "--database", "encode", "--device", "cpu")
    assert r.exit_code == 0, r.output
    bundle = base / "idx"
    assert run("build-index", codes, "-o", bundle, "--device", "cpu").exit_code == 0
    queries = base / "queries"
    queries.mkdir()
    for p in sorted((root / "images").rglob("test_*.png"))[:4]:
        (queries / f"{p.parent.name}-{p.name}").write_bytes(p.read_bytes())
    return run_dir, bundle, queries


def _jsonl(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_a_glob_after_image_searches_every_image(indexed):
    run_dir, bundle, queries = indexed
    images = sorted(glob.glob(str(queries / "*.png")))  # what `--image queries/*.png` gives
    assert len(images) == 4
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


def test_the_command_line_glob_through_a_real_shell(indexed):
    run_dir, bundle, queries = indexed
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


def test_images_and_codes_together_are_one_sentence(indexed, tmp_path):
    run_dir, bundle, queries = indexed
    image = sorted(queries.glob("*.png"))[0]
    r = run("search", bundle, image, "--code", "000", "--run", run_dir, "--device", "cpu")
    assert r.exit_code == 2 and "not both" in r.output and "Traceback" not in r.output
