"""Radius search over ``fghash serve``'s API (issue 22 item 1): ``radius`` and
``max_results`` in a search body give what ``fghash search --radius --format jsonl``
prints (a real process), by codes and by ids; an hnsw index, a negative radius and
``max_results`` without a radius are one-sentence 400s, and the server keeps serving.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("faiss")

from fastapi.testclient import TestClient  # noqa: E402

from fghash.codes import CodesFile, Split, code_to_hex, pack_bits, read_codes, write_codes  # noqa: E402
from fghash.serve.app import create_app  # noqa: E402
from fghash.serve.registry import Registry  # noqa: E402
from fghash.serve.service import Settings  # noqa: E402
from tests._knn import hamming_matrix  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BITS = 16


def _split(n: int, first_id: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    return Split(
        codes=pack_bits(rng.integers(0, 2, size=(n, BITS)).astype(bool)),
        ids=np.arange(first_id, first_id + n, dtype=np.int64) * 7,
        labels=rng.integers(0, 5, size=n),
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, TestClient]:
    from index import build_bundle

    base = tmp_path_factory.mktemp("serve_radius")
    splits = {"database": _split(250, 0, 1), "query": _split(30, 10_000, 2)}
    write_codes(base / "c.h5", CodesFile(bits=BITS, splits=splits, method="itq"))
    reg = Registry()
    for kind in ("flat", "hnsw"):
        build_bundle(base / "c.h5", base / kind, kind=kind, device="cpu")
        reg.add(kind, base / kind)
    return base, TestClient(create_app(reg, Settings()))


def _cli(bundle: Path, codes: Path, *extra: object) -> list[dict]:
    r = subprocess.run(
        [sys.executable, "-m", "fghash", "search", str(bundle), "--codes", str(codes),
         "--format", "jsonl", "--device", "cpu", *map(str, extra)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_radius_over_http_equals_fghash_search(world) -> None:
    base, client = world
    q = read_codes(base / "c.h5")["query"]
    for radius, most in ((3, 1000), (6, 4)):
        want = _cli(base / "flat", base / "c.h5", "--radius", radius, "--max-results", most)
        body = {"codes": [code_to_hex(c) for c in q.codes], "radius": radius, "max_results": most}
        got = client.post("/indexes/flat/search", json=body).json()["results"]
        assert [(r["results"], r["truncated"]) for r in got] == [
            (w["results"], w["truncated"]) for w in want
        ]
        assert any(r["truncated"] for r in got) == (most == 4)
    # brute force: every item within 3, nearest first, ties by position
    db = read_codes(base / "c.h5")["database"]
    d = hamming_matrix(q.codes, db.codes)
    body = {"codes": [code_to_hex(c) for c in q.codes], "radius": 3}
    got = client.post("/indexes/flat/search", json=body).json()["results"]
    for row, r in zip(d, got, strict=True):
        order = np.argsort(row, kind="stable")
        order = order[row[order] <= 3]
        assert [h["id"] for h in r["results"]] == db.ids[order].tolist()
        assert r["truncated"] is False


def test_radius_by_ids_and_k_ignored(world) -> None:
    base, client = world
    want = _cli(base / "flat", base / "c.h5", "--split", "database", "--limit", 20, "--radius", 4)
    ids = (np.arange(20) * 7).tolist()
    body = {"ids": ids, "radius": 4, "k": 3}  # k is not used by a radius search
    got = client.post("/indexes/flat/search", json=body).json()["results"]
    assert got == want


def test_radius_refusals_are_one_sentence(world) -> None:
    _, client = world
    cases = [
        ("hnsw", {"ids": [0], "radius": 2}, "hnsw"),
        ("flat", {"ids": [0], "radius": -1}, "radius"),
        ("flat", {"ids": [0], "max_results": 5}, "radius"),
        ("flat", {"ids": [0], "radius": 2, "max_results": 0}, "max_results"),
    ]
    for name, body, word in cases:
        r = client.post(f"/indexes/{name}/search", json=body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert word in error and error.count(". ") == 0 and "\n" not in error
    assert client.post("/indexes/flat/search", json={"ids": [0], "k": 2}).status_code == 200
