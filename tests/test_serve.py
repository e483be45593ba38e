"""``fghash serve``'s HTTP API through the ASGI client (issue 21).

Every endpoint, every bad input (each a 4xx ``{"error": one sentence}``, the server still
serving, nothing written), answers equal to ``fghash search --format jsonl`` for 200
queries on flat, IVF and Milvus Lite bundles, reloads when another process adds, and
writes during a bounded loop of searches (each answer one version's whole answer; the
end state equal to a bundle built from scratch).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
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

ROOT = Path(__file__).resolve().parents[1]
BITS = 20
TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _split(n: int, first_id: int, seed: int, paths: list[str] | None = None) -> Split:
    rng = np.random.default_rng(seed)
    return Split(
        codes=pack_bits(rng.integers(0, 2, size=(n, BITS)).astype(bool)),
        ids=np.arange(first_id, first_id + n, dtype=np.int64),
        labels=rng.integers(0, 5, size=n),
        paths=paths or [f"img/{first_id + i}.jpg" for i in range(n)],
    )


def _write(path: Path, database: Split, query: Split | None = None) -> None:
    splits = {"database": database} | ({"query": query} if query is not None else {})
    write_codes(path, CodesFile(bits=BITS, splits=splits, method="itq"))


def _fghash(*args: object) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [sys.executable, "-m", "fghash", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r


def _build(codes: Path, out: Path, *extra: object) -> Path:
    from index import build_bundle

    kw = {"kind": "ivf", "nlist": 4} if "ivf" in extra else {}
    build_bundle(codes, out, device="cpu", **kw)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """300 items of 20 bits (many ties), 200 queries; a flat and an IVF bundle."""
    base = tmp_path_factory.mktemp("serve")
    _write(base / "c.h5", _split(300, 0, seed=0), _split(200, 90_000, seed=9))
    _build(base / "c.h5", base / "flat")
    _build(base / "c.h5", base / "ivf", "ivf")
    return base


def _client(reg: Registry, **settings) -> TestClient:
    return TestClient(create_app(reg, Settings(**settings)))


@pytest.fixture(scope="module")
def client(world: Path) -> TestClient:
    reg = Registry()
    reg.add("flat", world / "flat")
    reg.add("ivf", world / "ivf")
    return _client(reg, max_queries=250, max_upload_mb=0.05)


def _cli_jsonl(bundle: Path, codes: Path, split: str = "query", k: int = 10, *extra) -> list[dict]:
    r = _fghash("search", bundle, "--codes", codes, "--split", split, "-k", k,
                "--format", "jsonl", "--device", "cpu", *extra)  # fmt: skip
    return [json.loads(line) for line in r.stdout.splitlines()]


# -- the read endpoints -------------------------------------------------------------------
def test_health_indexes_item_bits_metrics(client: TestClient, world: Path) -> None:
    assert client.get("/health").json() == {"status": "ok", "indexes": ["flat", "ivf"]}
    listed = {d["name"]: d for d in client.get("/indexes").json()}
    assert listed["flat"]["ntotal"] == 300 and listed["flat"]["bits"] == BITS
    assert listed["ivf"]["kind"] == "ivf" and listed["ivf"]["backend"] == "faiss"
    assert listed["flat"]["image_queries"] is False and listed["flat"]["writable"] is False
    db = read_codes(world / "c.h5")["database"]
    item = client.get("/indexes/flat/items/7").json()
    assert item == {
        "id": 7, "label": int(db.labels[7]), "path": "img/7.jpg", "position": 7,
        "code": code_to_hex(db.codes[7]),
    }  # fmt: skip
    assert client.get("/indexes/ivf/items/7").json()["code"] == item["code"]
    assert client.get("/indexes/flat/bits").json() == {
        "bits": BITS, "attribute_of_bit": None, "attribute_names": None,
    }  # fmt: skip
    text = client.get("/metrics").text
    assert (
        'fghash_requests_total{endpoint="GET /indexes/{name}/items/{item_id}",status="200"}' in text
    )
    assert 'fghash_stage_seconds_count{stage="metadata"}' in text
    assert client.get("/").status_code == 200
    assert "paths" in client.get("/openapi.json").json()


@pytest.mark.parametrize("name", ["flat", "ivf"])
def test_200_queries_equal_fghash_search_jsonl(client: TestClient, world: Path, name: str) -> None:
    want = _cli_jsonl(world / name, world / "c.h5")
    q = read_codes(world / "c.h5")["query"]
    hexes = [code_to_hex(c) for c in q.codes]
    got = client.post(f"/indexes/{name}/search", json={"codes": hexes, "k": 10}).json()
    assert got["index"] == name and got["generation"] == 1
    assert [r["results"] for r in got["results"]] == [w["results"] for w in want]
    assert all(r["query"] == {"id": None, "label": None, "path": None} for r in got["results"])
    b64 = [base64.b64encode(bytes(c)).decode() for c in q.codes]
    got64 = client.post(f"/indexes/{name}/search", json={"codes_b64": b64, "k": 10}).json()
    assert got64["results"] == got["results"]
    # ids: the database items' own codes as queries, exactly the codes-file split search
    want_db = _cli_jsonl(world / name, world / "c.h5", "database", 5, "--limit", 200)
    ids = client.post(f"/indexes/{name}/search", json={"ids": list(range(200)), "k": 5}).json()
    assert ids["results"] == want_db


def test_search_parameters_as_the_cli(client: TestClient, world: Path) -> None:
    want = _cli_jsonl(world / "ivf", world / "c.h5", "query", 3, "--nprobe", 1, "--limit", 20)
    q = read_codes(world / "c.h5")["query"]
    body = {"codes": [code_to_hex(c) for c in q.codes[:20]], "k": 3, "nprobe": 1}
    got = client.post("/indexes/ivf/search", json=body).json()
    assert [r["results"] for r in got["results"]] == [w["results"] for w in want]
    r = client.post("/indexes/flat/search", json={"ids": [1], "nprobe": 2})
    assert r.status_code == 400 and "ivf" in r.json()["error"]


def _one_sentence(r, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    msg = body["error"]
    assert msg.endswith(".") and "\n" not in msg and "Traceback" not in msg
    return msg


BAD_SEARCHES = [
    (b"{not json", 422, "not valid JSON"),
    (b"[1, 2]", 422, ""),
    ({"codes": ["0a1b"]}, 400, "20-bit"),  # another width
    ({"codes": ["0a1b2c3d"]}, 400, "20-bit"),
    ({"codes": ["zz11gg"]}, 400, "hexadecimal"),
    ({"codes": ["ffffff"]}, 400, ""),  # bits above the 20th set
    ({"codes_b64": ["@@@"]}, 400, "base64"),
    ({"codes_b64": [base64.b64encode(b"\x01\x02").decode()]}, 400, "bytes"),
    ({"ids": [5, 123456]}, 404, "123456"),
    ({"ids": [1], "k": 0}, 400, "k"),
    ({"ids": [1], "k": 301}, 400, "300"),
    ({"ids": [1], "k": "3"}, 422, "k"),
    ({"ids": list(range(251))}, 400, "at most 250"),
    ({"ids": [1], "colour": "red"}, 422, "colour"),
    ({"ids": [1], "codes": ["000000"]}, 400, "exactly one"),
    ({}, 400, "exactly one"),
    ({"ids": []}, 400, "no queries"),
    ({"ids": [True]}, 422, ""),
]


@pytest.mark.parametrize(("body", "status", "words"), BAD_SEARCHES)
def test_bad_search_is_one_sentence_and_the_server_keeps_serving(
    client: TestClient, body, status: int, words: str
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post(
        "/indexes/flat/search", content=raw, headers={"content-type": "application/json"}
    )
    assert words in _one_sentence(r, status)
    assert client.post("/indexes/flat/search", json={"ids": [3], "k": 2}).status_code == 200


def test_unknown_index_item_route_and_oversized_body(client: TestClient) -> None:
    assert "nope" in _one_sentence(client.post("/indexes/nope/search", json={"ids": [1]}), 404)
    _one_sentence(client.get("/indexes/nope/items/1"), 404)
    _one_sentence(client.get("/indexes/flat/items/999999"), 404)
    _one_sentence(client.get("/no/such/route"), 404)
    big = json.dumps({"codes": ["000000"] * 20_000}).encode()  # > 0.05 MiB
    assert "--max-upload-mb" in _one_sentence(
        client.post(
            "/indexes/flat/search", content=big, headers={"content-type": "application/json"}
        ),
        413,
    )
    assert client.get("/health").status_code == 200


def test_uploads_refused_before_any_network(client: TestClient, tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "a.png"
    Image.new("RGB", (40, 40), (200, 10, 10)).save(png)
    data = png.read_bytes()
    for name, blob, words in [
        ("notes.txt", b"hello, not an image", "not an image"),
        ("cut.png", data[: len(data) // 2], "truncated"),
        ("empty.png", b"", "empty"),
    ]:
        r = client.post("/indexes/flat/search/image", files=[("images", (name, blob))])
        assert words in _one_sentence(r, 400)
    r = client.post(
        "/indexes/flat/search/image", files=[("images", ("big.png", b"\x89PNG" * 20_000))]
    )
    _one_sentence(r, 413)
    r = client.post("/indexes/flat/search/image", files=[("images", ("a.png", data))])
    assert "run" in _one_sentence(r, 400)  # a whole image, but no run recorded
    _one_sentence(client.post("/indexes/flat/search/image"), 422)  # no images field


# -- item images: only from under the data root -------------------------------------------
@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    from PIL import Image

    base = tmp_path_factory.mktemp("pictures")
    root = base / "root"
    (root / "img").mkdir(parents=True)
    Image.new("RGB", (8, 8), (0, 90, 0)).save(root / "img" / "ok.png")
    (base / "secret.png").write_bytes((root / "img" / "ok.png").read_bytes())
    (root / "img" / "out.png").symlink_to(base / "secret.png")
    (root / "img" / "in.png").symlink_to(root / "img" / "ok.png")
    paths = ["img/ok.png", "../secret.png", str(base / "secret.png"), "img/out.png",
             "img/in.png", "img/missing.png", "img/../../secret.png", "img/ok.png"]  # fmt: skip
    _write(base / "c.h5", _split(len(paths), 0, seed=3, paths=paths))
    _build(base / "c.h5", base / "b")
    reg = Registry()
    reg.add("b", base / "b")
    return _client(reg, data_root=str(root)), base


def test_item_images_only_from_under_the_data_root(pictures) -> None:
    client, base = pictures
    r = client.get("/indexes/b/items/0/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == (base / "root" / "img" / "ok.png").read_bytes()
    assert client.get("/indexes/b/items/4/image").status_code == 200  # a symlink inside
    for item in (1, 2, 3, 6):  # ../, absolute, symlink out, ../ further down
        msg = _one_sentence(client.get(f"/indexes/b/items/{item}/image"), 403)
        assert "data root" in msg
    _one_sentence(client.get("/indexes/b/items/5/image"), 404)


# -- writes ---------------------------------------------------------------------------------
@pytest.fixture
def writable(tmp_path: Path):
    _write(tmp_path / "c.h5", _split(120, 0, seed=0), _split(30, 90_000, seed=9))
    _build(tmp_path / "c.h5", tmp_path / "b")
    reg = Registry()
    reg.add("b", tmp_path / "b")
    return tmp_path, reg


def _new_items(n: int, first_id: int, seed: int) -> dict:
    s = _split(n, first_id, seed)
    return {
        "codes": [code_to_hex(c) for c in s.codes],
        "ids": s.ids.tolist(),
        "labels": s.labels.tolist(),
        "paths": list(s.paths),
    }


def _state(world: Path) -> tuple[str, bytes]:
    """index.json and the codes file's bytes: what a refused write must leave alone."""
    return (world / "b" / "index.json").read_text(), (world / "c.h5").read_bytes()


def test_writes_off_no_token_bad_token_bad_body_write_nothing(writable) -> None:
    world, reg = writable
    off = _client(reg)
    before = _state(world)
    assert "--allow-writes" in _one_sentence(
        off.post("/indexes/b/items", json=_new_items(2, 500, 1)), 403
    )
    on = _client(reg, token=TOKEN)
    _one_sentence(on.post("/indexes/b/items", json=_new_items(2, 500, 1)), 401)
    bad = {"Authorization": "Bearer not-the-token"}
    _one_sentence(on.post("/indexes/b/items", json=_new_items(2, 500, 1), headers=bad), 401)
    _one_sentence(
        on.post("/indexes/b/items", json=_new_items(2, 5, 1), headers=AUTH), 400
    )  # id 5 held
    body = _new_items(2, 500, 1) | {"colour": 1}
    _one_sentence(on.post("/indexes/b/items", json=body, headers=AUTH), 422)
    body = _new_items(2, 500, 1) | {"codes": ["00"] * 2}
    _one_sentence(on.post("/indexes/b/items", json=body, headers=AUTH), 400)
    _one_sentence(on.delete("/indexes/b/items/3"), 401)
    _one_sentence(off.delete("/indexes/b/items/3", headers=AUTH), 403)
    _one_sentence(on.delete("/indexes/b/items/99999", headers=AUTH), 404)
    _one_sentence(on.post("/indexes/b/items/remove", json={"ids": [3, 99999]}, headers=AUTH), 400)
    _one_sentence(on.post("/indexes/b/items/remove", json={"ids": []}, headers=AUTH), 400)
    assert _state(world) == before
    assert sorted(p.name for p in world.iterdir() if p.name.startswith(".")) == []


def test_write_then_search_sees_it_and_equals_fghash_add(writable) -> None:
    world, reg = writable
    on = _client(reg, token=TOKEN)
    r = on.post("/indexes/b/items", json=_new_items(5, 1000, 2), headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {"added": 5, "ntotal": 125, "generation": 2}
    assert on.get("/indexes/b/items/1003").json()["path"] == "img/1003.jpg"
    assert read_codes(world / "c.h5")["database"].ids.tolist() == [*range(120), *range(1000, 1005)]
    _fghash("info", world / "b", "--verify")


def test_remove_then_search_and_codes_file_agree(writable) -> None:
    world, reg = writable
    on = _client(reg, token=TOKEN)
    r = on.delete("/indexes/b/items/7", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {"removed": 1, "ntotal": 119, "generation": 2}
    r = on.post("/indexes/b/items/remove", json={"ids": [8, 9]}, headers=AUTH)
    assert r.json() == {"removed": 2, "ntotal": 117, "generation": 3}
    _one_sentence(on.get("/indexes/b/items/8"), 404)
    left = [i for i in range(120) if i not in (7, 8, 9)]
    assert read_codes(world / "c.h5")["database"].ids.tolist() == left
    hits = on.post("/indexes/b/search", json={"ids": [10], "k": 117}).json()["results"][0]
    assert sorted(h["id"] for h in hits["results"]) == left
    _fghash("info", world / "b", "--verify")


def test_reload_after_fghash_add_in_another_process(writable) -> None:
    world, reg = writable
    client = _client(reg)
    old = reg.get("b").current()
    _write(world / "new.h5", _split(4, 2000, seed=5))
    _fghash("add", world / "b", world / "new.h5")
    listed = client.get("/indexes").json()[0]
    assert listed["ntotal"] == 124 and listed["generation"] == 2
    assert (
        client.post("/indexes/b/search", json={"ids": [2003], "k": 1}).json()["results"][0][
            "results"
        ][0]["id"]
        == 2003
    )
    assert old.ntotal == 120  # the version a search in flight holds is unchanged


def _brute(codes: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> list[list[int]]:
    """The k smallest Hamming distances of each query (tie-aware check)."""
    x = np.bitwise_xor(q[:, None, :], codes[None, :, :])
    d = np.unpackbits(x, axis=2).sum(axis=2)
    return np.sort(d, axis=1)[:, :k].tolist(), d


def test_writes_during_searches_each_answer_one_version(writable) -> None:
    world, reg = writable
    app = create_app(reg, Settings(token=TOKEN))
    base = read_codes(world / "c.h5")
    db, q = base["database"], base["query"]
    batches = [_split(6, 3000 + 10 * i, seed=20 + i) for i in range(4)]
    versions = {1: (db.codes, db.ids)}
    codes, ids = db.codes, db.ids
    for g, s in enumerate(batches, start=2):
        codes, ids = np.concatenate([codes, s.codes]), np.concatenate([ids, s.ids])
        versions[g] = (codes, ids)
    errors: list[str] = []

    def writer() -> None:
        with TestClient(app) as w:
            for i, s in enumerate(batches):
                body = {"codes": [code_to_hex(c) for c in s.codes], "ids": s.ids.tolist(),
                        "labels": s.labels.tolist(), "paths": list(s.paths)}  # fmt: skip
                r = w.post("/indexes/b/items", json=body, headers=AUTH)
                if r.status_code != 200:
                    errors.append(r.text)
                time.sleep(0.02 * i)

    hexes = [code_to_hex(c) for c in q.codes]
    t = threading.Thread(target=writer)
    t.start()
    seen = set()
    deadline = time.monotonic() + 30
    with TestClient(app) as c:
        for _ in range(200):  # bounded in count and in time
            r = c.post("/indexes/b/search", json={"codes": hexes, "k": 5})
            assert r.status_code == 200, r.text
            got = r.json()
            g = got["generation"]
            seen.add(g)
            vcodes, vids = versions[g]
            want_d, d = _brute(vcodes, vids, q.codes, 5)
            pos = {int(i): j for j, i in enumerate(vids)}
            for qi, row in enumerate(got["results"]):
                assert [x["distance"] for x in row["results"]] == want_d[qi]
                assert all(d[qi, pos[x["id"]]] == x["distance"] for x in row["results"])
            if not t.is_alive() and len(seen) > 1 or time.monotonic() > deadline:
                break
    t.join(60)
    assert not errors, errors
    assert max(seen) == 5 or reg.get("b").current().generation == 5
    # afterwards: equal to a bundle built from scratch on the grown codes file
    _build(world / "c.h5", world / "scratch")
    assert _cli_jsonl(world / "b", world / "c.h5") == _cli_jsonl(world / "scratch", world / "c.h5")
    assert sorted(p.name for p in world.iterdir() if p.name.startswith(".")) == []


# -- Milvus Lite -----------------------------------------------------------------------------
def test_200_queries_equal_on_milvus_lite(world: Path, tmp_path: Path) -> None:
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    import warnings

    from index import build_bundle, search_bundle

    warnings.simplefilter("ignore")
    out = tmp_path / "mv"
    build_bundle(world / "c.h5", out, backend="milvus", uri=str(tmp_path / "m.db"))
    want = search_bundle(out, 10, codes=world / "c.h5", split="query")
    want_db = search_bundle(out, 4, codes=world / "c.h5", split="database", limit=30)
    reg = Registry()
    reg.add("mv", out)
    client = _client(reg)
    assert client.get("/indexes").json()[0]["backend"] == "milvus"
    q = read_codes(world / "c.h5")["query"]
    got = client.post(
        "/indexes/mv/search", json={"codes": [code_to_hex(c) for c in q.codes]}
    ).json()
    assert [r["results"] for r in got["results"]] == [w["results"] for w in want]
    ids = client.post("/indexes/mv/search", json={"ids": list(range(30)), "k": 4}).json()
    assert ids["results"] == want_db
    assert client.get("/indexes/mv/items/11").json()["id"] == 11
    _one_sentence(client.post("/indexes/mv/search", json={"ids": [77777]}), 404)


def test_serve_module_imports_neither_torch_nor_fastapi_for_search() -> None:
    code = (
        "import sys, fghash, fghash.cli, fghash.serve;"
        "assert not {'torch', 'fastapi', 'faiss'} & set(sys.modules), sys.modules.keys()"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# -- images, with a tiny trained run (slow: it trains) ---------------------------------------
@pytest.mark.slow
def test_image_search_equals_fghash_search_image(tmp_path: Path) -> None:
    from fghash.data import generate_synthetic
    from fghash.runs.config import resolve_config
    from fghash.training.loop import train

    root = generate_synthetic(
        tmp_path / "birds", num_classes=3, train_per_class=4, test_per_class=2, image_size=32
    )
    cfg = resolve_config(
        "synthetic", "a2net", data_root=str(root), backbone="resnet18", weights="none",
        image_size=32, bits=12, num_attention=2, num_samples=9, batch_size=3, max_iter=1,
        epochs=1, device="cpu", gamma=1.0, lr=1e-3,
    )  # fmt: skip
    train(cfg, tmp_path / "run", progress=False)
    _fghash("encode", tmp_path / "run", "--out", tmp_path / "codes.h5", "--database", "encode",
            "--device", "cpu")  # fmt: skip
    _fghash("build-index", tmp_path / "codes.h5", "--out", tmp_path / "idx", "--device", "cpu")
    images = sorted((root / "images").rglob("test_*.png"))[:3]
    r = _fghash("search", tmp_path / "idx", "--image", *images, "-k", "4", "--format", "jsonl",
                "--device", "cpu")  # fmt: skip
    want = [json.loads(line) for line in r.stdout.splitlines()]
    reg = Registry()
    reg.add("idx", tmp_path / "idx")
    client = _client(reg, token=TOKEN)
    assert client.get("/indexes").json()[0]["image_queries"] is True
    files = [("images", (p.name, p.read_bytes())) for p in images]
    got = client.post("/indexes/idx/search/image", params={"k": 4}, files=files).json()
    assert [g["results"] for g in got["results"]] == [w["results"] for w in want]
    assert [g["query"]["path"] for g in got["results"]] == [p.name for p in images]
    first = want[0]["results"][0]
    assert client.get(f"/indexes/idx/items/{first['id']}/image").status_code == 200
    r = client.post(
        "/indexes/idx/items", files=files[:1], data={"first_id": "5000", "label": "1"}, headers=AUTH
    )
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 1
    _fghash("info", tmp_path / "idx", "--verify")
