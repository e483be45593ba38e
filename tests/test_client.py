"""fghash.client.Client and `fghash search --server`, against a real `fghash serve` process
on a loopback port (and, for the failures on the way, against sockets that misbehave)."""

from __future__ import annotations

import email.parser
import http.server
import json
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fghash.client import Client
from fghash.errors import FghashError
from tests._serve_proc import ROOT, free_port, serving

# -- without a server ---------------------------------------------------------------------


def test_import_brings_neither_torch_faiss_nor_numpy() -> None:
    code = (
        "import sys, fghash.client; print(sorted({'torch', 'faiss', 'numpy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("url", ["localhost:8000", "ftp://host/x", "", "http://"])
def test_a_url_that_is_not_http_is_one_sentence(url: str) -> None:
    with pytest.raises(FghashError, match="not an http:// or https:// address"):
        Client(url)


def test_connection_refused_is_one_sentence() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(FghashError) as e:
        Client(url, timeout=5).health()
    assert str(e.value).startswith(f"no server answers at {url} (connection refused)")


def test_a_server_that_never_answers_times_out_in_one_sentence() -> None:
    with socket.socket() as s:  # accepts (the kernel's backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(FghashError, match=r"did not answer within 0\.5 s\.$"):
            Client(url, timeout=0.5).indexes()


class _Plain(http.server.BaseHTTPRequestHandler):
    """Answers like a server that is not fghash's: text bodies, a JSON error on /err."""

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/err":
            body, status = json.dumps({"error": "the index 'x' is not served here."}), 404
        elif self.path == "/health":
            body, status = "<html>hello</html>", 200
        else:
            body, status = "Internal trouble", 500
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def do_POST(self) -> None:  # noqa: N802
        n = int(self.headers["Content-Length"])
        self.server.seen = (self.headers["Content-Type"], self.rfile.read(n))  # type: ignore[attr-defined]
        body = json.dumps({"results": []}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def plain() -> tuple[str, http.server.HTTPServer]:
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Plain)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_port}", srv
    srv.shutdown()
    srv.server_close()


def test_answers_that_are_not_the_apis_are_one_sentence(plain) -> None:
    url, _ = plain
    c = Client(url + "/", timeout=5)
    with pytest.raises(FghashError, match=r"not JSON \(status 200\); is it an fghash server\?"):
        c.health()
    with pytest.raises(FghashError, match=r"HTTP 500 Internal Server Error\.$"):
        c.indexes()
    with pytest.raises(FghashError) as e:
        c._json("GET", "/err")
    assert str(e.value) == "the index 'x' is not served here."


def test_images_go_as_multipart_with_their_names(plain, tmp_path: Path) -> None:
    url, srv = plain
    a, b = tmp_path / "a b.png", tmp_path / 'we"ird.jpg'
    a.write_bytes(b"\x89PNG\r\n\x1a\n--not-a-boundary\r\n")
    b.write_bytes(bytes(range(256)))
    assert Client(url).search_images("my index", [a, b], k=3) == []
    ctype, body = srv.seen
    msg = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body
    )
    parts = msg.get_payload()
    assert [p.get_param("name", header="content-disposition") for p in parts] == ["images"] * 2
    assert [p.get_filename() for p in parts] == ["a b.png", "we%22ird.jpg"]
    assert [p.get_content_type() for p in parts] == ["image/png", "image/jpeg"]
    assert [p.get_payload(decode=True) for p in parts] == [a.read_bytes(), b.read_bytes()]


def test_a_missing_image_is_one_sentence_before_any_request(tmp_path: Path) -> None:
    with pytest.raises(FghashError, match="no such file"):
        Client("http://127.0.0.1:9").search_images("x", [tmp_path / "none.png"])


def test_codes_as_hex_or_packed_arrays_and_bad_ones() -> None:
    from fghash.client import _hex_codes

    arr = np.array([[1, 2], [255, 0]], dtype=np.uint8)
    assert _hex_codes(arr) == ["0102", "ff00"]
    assert _hex_codes("0a0b") == ["0a0b"]
    with pytest.raises(FghashError, match="packed uint8"):
        _hex_codes(arr.astype(np.int32))
    with pytest.raises(FghashError, match="hex strings"):
        _hex_codes([3])
    with pytest.raises(FghashError, match="codes or as ids"):
        Client("http://127.0.0.1:9").search("x", codes=["00"], ids=[1])


# -- against a real `fghash serve` ---------------------------------------------------------

BITS, N, NQ = 20, 300, 40


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[str, Path, Path]:
    """A 300-item 20-bit flat bundle (many ties) served as 'tiny'; (url, codes, bundle)."""
    pytest.importorskip("faiss")
    pytest.importorskip("fastapi")
    from fghash.cli import main
    from fghash.codes import Split, make_codes_file, pack_bits, write_codes

    base = tmp_path_factory.mktemp("client")
    rng = np.random.default_rng(4)
    db = Split(
        pack_bits(rng.integers(0, 2, (N, BITS))),
        ids=np.arange(N) * 7 + 5,
        labels=rng.integers(0, 5, N),
        paths=[f"img/{i}.png" for i in range(N)],
    )
    q = Split(
        pack_bits(rng.integers(0, 2, (NQ, BITS))),
        ids=np.arange(NQ) + 5000,
        labels=rng.integers(0, 5, NQ),
        paths=[f"q/{i}.png" for i in range(NQ)],
    )
    codes = write_codes(base / "codes.h5", make_codes_file(BITS, db, q, method="itq"))
    bundle = base / "tiny"
    r = CliRunner().invoke(
        main, ["build-index", str(codes), "--out", str(bundle), "--device", "cpu"]
    )
    assert r.exit_code == 0, r.output
    with serving([bundle], base / "serve.log") as url:
        yield url, codes, bundle


def _cli(*args: object) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "fghash", *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_health_and_indexes(served) -> None:
    url, _, bundle = served
    c = Client(url)
    assert c.health() == {"status": "ok", "indexes": ["tiny"]}
    (entry,) = c.indexes()
    assert (entry["name"], entry["bits"], entry["ntotal"], entry["kind"]) == (
        "tiny",
        BITS,
        N,
        "flat",
    )
    assert entry["image_queries"] is False  # the codes file records no run


def test_search_by_hex_array_and_ids_equals_the_in_process_search(served) -> None:
    url, codes, bundle = served
    from index import search_bundle

    c = Client(url)
    want = search_bundle(bundle, 12, codes=codes)  # the query split, all 40
    from fghash.codes import read_codes

    xq = read_codes(codes, splits=["query"], features=False, attributes=False)["query"].codes
    for got in (
        c.search("tiny", codes=xq, k=12),
        c.search("tiny", codes=[r.tobytes().hex() for r in xq], k=12),
    ):
        assert [g["results"] for g in got] == [w["results"] for w in want]  # ties in the same order
        assert all(g["query"] == {"id": None, "label": None, "path": None} for g in got)
    db_ids = [5, 12, 2098]  # ids 0, 1 and 299 of the database
    by_id = c.search("tiny", ids=db_ids, k=5)
    assert [g["query"]["id"] for g in by_id] == db_ids
    assert all(g["results"][0]["distance"] == 0 for g in by_id)
    item = c.item("tiny", 12)
    assert (item["id"], item["path"], item["position"]) == (12, "img/1.png", 1)
    same = c.search("tiny", codes=[item["code"]], k=5)
    assert same[0]["results"] == by_id[1]["results"]


def test_server_refusals_are_its_one_sentence(served) -> None:
    url, _, _ = served
    c = Client(url)
    for call, needle in [
        (lambda: c.search("nope", codes=["000000"]), "nope"),
        (lambda: c.search("tiny", codes=["00"]), "codes[0]"),
        (lambda: c.search("tiny", codes=["000000"], k=N + 1), str(N)),
        (lambda: c.search("tiny", ids=[6]), "6"),
        (lambda: c.item("tiny", 6), "6"),
    ]:
        with pytest.raises(FghashError) as e:
            call()
        text = str(e.value)
        assert needle in text and "\n" not in text and "Traceback" not in text, text
    assert c.health()["status"] == "ok"  # still serving


@pytest.mark.parametrize("fmt", ["jsonl", "table"])
def test_search_server_prints_what_a_local_search_prints(served, fmt: str) -> None:
    url, codes, bundle = served
    for queries in (
        ["--codes", codes, "--limit", 25],
        ["--codes", codes, "--split", "database", "--limit", 3],
        ["--code", "0f0a03"],
    ):
        local = _cli("search", bundle, *queries, "-k", 7, "--format", fmt)
        remote = _cli("search", "--server", url, "tiny", *queries, "-k", 7, "--format", fmt)
        assert local.returncode == 0 and remote.returncode == 0, (local.stderr, remote.stderr)
        assert remote.stdout == local.stdout
        assert remote.stdout.count("query") >= 1


def test_search_server_never_imports_torch(served) -> None:
    url, _, _ = served
    code = (
        "import sys\nfrom fghash.cli import main\n"
        f"main(['search', '--server', '{url}', 'tiny', '--code', '010203', '--format', 'jsonl'],"
        " standalone_mode=False)\n"
        "assert 'torch' not in sys.modules and 'faiss' not in sys.modules, 'imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["query"] == {"id": None, "label": None, "path": None}


def test_search_server_errors_are_one_sentence(served) -> None:
    url, codes, bundle = served
    cases = [
        (["--server", url, "nope", "--code", "000000"], "nope"),
        (["--server", url, "tiny", "--code", "00"], "bytes"),
        (["--server", url, "tiny", "--code", "000000", "--run", bundle], "--run"),
        (["--server", url, "tiny", "--code", "000000", "--device", "cpu"], "--device"),
        (["--server", url, "tiny"], "one of them"),
        (
            ["--server", f"http://127.0.0.1:{free_port()}", "tiny", "--code", "000000"],
            "connection refused",
        ),
    ]
    for args, needle in cases:
        r = _cli("search", *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], (
            args,
            r.stderr,
        )
        assert r.stdout == ""


def test_add_needs_the_token_and_then_lands(served, tmp_path: Path) -> None:
    """Writes through the client: refused without the token, then found by a search."""
    _, codes, _ = served
    from fghash.cli import main

    mine = tmp_path / "codes.h5"
    mine.write_bytes(Path(codes).read_bytes())  # add grows the codes file too
    bundle = tmp_path / "grow"
    r = CliRunner().invoke(
        main, ["build-index", str(mine), "--out", str(bundle), "--device", "cpu"]
    )
    assert r.exit_code == 0, r.output
    token = tmp_path / "token"
    token.write_text("a-token-of-some-length\n")
    args = [bundle, "--allow-writes", "--token-file", token]
    with serving(args, tmp_path / "serve.log") as url:
        new = np.array([[0xAB, 0xCD, 0x0F], [0x01, 0x02, 0x03]], dtype=np.uint8)
        for c in (Client(url), Client(url, token="wrong-token-here")):
            with pytest.raises(FghashError) as e:
                c.add("grow", codes=new, ids=[90001, 90002], labels=[1, 2])
            assert "token" in str(e.value) and "\n" not in str(e.value)
        assert Client(url).indexes()[0]["ntotal"] == N  # nothing written
        c = Client(url, token=" a-token-of-some-length ")
        done = c.add(
            "grow", codes=new, ids=[90001, 90002], labels=[1, 2], paths=["n/1.png", "n/2.png"]
        )
        assert (done["added"], done["ntotal"]) == (2, N + 2)
        hit = c.search("grow", codes=["abcd0f"], k=1)[0]["results"][0]
        assert (hit["id"], hit["distance"], hit["label"], hit["path"]) == (90001, 0, 1, "n/1.png")
        assert c.item("grow", 90002)["code"] == "010203"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A tiny trained run's bundle (it records the run) and three query photos."""
    pytest.importorskip("faiss")
    pytest.importorskip("fastapi")
    from PIL import Image

    from fghash.cli import main
    from fghash.data import generate_synthetic
    from fghash.runs.config import resolve_config
    from fghash.training.loop import train

    base = tmp_path_factory.mktemp("client-images")
    root = generate_synthetic(
        base / "birds", num_classes=3, train_per_class=4, test_per_class=2, image_size=32
    )
    cfg = resolve_config(
        "synthetic", "a2net", data_root=str(root), backbone="resnet18", weights="none",
        image_size=32, bits=12, num_attention=2, num_samples=9, batch_size=3, max_iter=1,
        epochs=1, device="cpu", gamma=1.0, lr=1e-3,
    )  # fmt: skip
    train(cfg, base / "run", progress=False)
    codes, bundle = base / "codes.h5", base / "idx"
    for args in (
        ["encode", base / "run", "--out", codes, "--database", "encode", "--device", "cpu"],
        ["build-index", codes, "--out", bundle, "--device", "cpu"],
    ):
        r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    photos = sorted(root.rglob("test_*.png"))[:2]
    jpg = base / "my photo.jpg"
    Image.open(photos[0]).convert("RGB").resize((50, 41)).save(jpg)
    return bundle, [*photos, jpg]


@pytest.mark.slow
def test_search_server_by_images_prints_what_a_local_search_prints(trained, tmp_path) -> None:
    bundle, photos = trained
    with serving([bundle], tmp_path / "serve.log") as url:
        got = Client(url).search_images("idx", photos, k=4)
        assert [g["query"]["path"] for g in got] == [p.name for p in photos]
        assert all(re.fullmatch(r"[0-9a-f]{4}", g["query"]["code"]) for g in got)  # 12 bits
        for fmt in ("jsonl", "table"):
            images = [str(photos[0]), "--image", str(photos[1]), "--image", str(photos[2])]
            local = _cli("search", bundle, *images, "-k", 4, "--format", fmt, "--device", "cpu")
            remote = _cli("search", "--server", url, "idx", *images, "-k", 4, "--format", fmt)
            assert local.returncode == 0 and remote.returncode == 0, (local.stderr, remote.stderr)
            assert remote.stdout == local.stdout and remote.stdout.count("query") == 3
        r = _cli("search", "--server", url, "idx", str(photos[0]), "--nflip", 1)
        assert r.returncode == 2 and "--nflip" in r.stderr
