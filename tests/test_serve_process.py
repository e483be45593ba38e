"""A real ``fghash serve`` process on a free loopback port (issue 21).

Started and stopped by the tests: it prints the URL it bound (``--port 0``), answers,
finishes a request in flight after SIGTERM and exits 0; killed with ``kill -9`` in the
middle of a write (``FGHASH_KILL_AT``), it comes back with the bundle in the state before
or after the write, its checksums verifying and nothing hidden left beside it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("faiss")

from fghash.codes import CodesFile, Split, code_to_hex, pack_bits, write_codes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BITS = 20
TOKEN = "token-of-the-process-tests"


def _split(n: int, first_id: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    return Split(
        codes=pack_bits(rng.integers(0, 2, size=(n, BITS)).astype(bool)),
        ids=np.arange(first_id, first_id + n, dtype=np.int64),
        labels=rng.integers(0, 5, size=n),
        paths=[f"img/{first_id + i}.jpg" for i in range(n)],
    )


@pytest.fixture
def world(tmp_path: Path) -> Path:
    from index import build_bundle

    write_codes(tmp_path / "c.h5", CodesFile(bits=BITS, splits={"database": _split(120, 0, 0)}))
    build_bundle(tmp_path / "c.h5", tmp_path / "b", device="cpu")
    (tmp_path / "token").write_text(TOKEN + "\n")
    return tmp_path


class Server:
    """``fghash serve`` in a child process; :attr:`url` from its first line."""

    def __init__(self, world: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fghash", "serve", str(world / "b"), "--port", "0",
             "--device", "cpu", *args],
            cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not m:
            self.proc.kill()
            raise AssertionError(f"no URL in {line!r}: {self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict, token: str | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, json.dumps(body).encode(), headers)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def test_start_query_sigterm_with_a_request_in_flight(world: Path) -> None:
    server = Server(world, "--threads", "1")
    try:
        assert server.get("/health") == {"status": "ok", "indexes": ["b"]}
        maps = Path(f"/proc/{server.proc.pid}/maps")
        if maps.exists():  # torch is imported by the first image request, not at start-up
            assert "libtorch" not in maps.read_text()
        got = server.post("/indexes/b/search", {"ids": [4], "k": 3})
        assert got["results"][0]["results"][0]["id"] == 4
        # a request whose body is still arriving when SIGTERM comes
        body = json.dumps({"ids": [5, 6], "k": 2}).encode()
        s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        head = (
            f"POST /indexes/b/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        s.sendall(head + body[:5])
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.proc.poll() is None  # still finishing the request in flight
        s.sendall(body[5:])
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        s.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        got = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert [r["results"][0]["id"] for r in got["results"]] == [5, 6]
        assert server.proc.wait(timeout=30) == 0
        with pytest.raises(OSError):  # no longer accepting
            socket.create_connection(("127.0.0.1", server.port), timeout=2)
    finally:
        server.stop()


def test_a_bundle_that_cannot_load_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "fghash", "serve", str(tmp_path / "nothing"), "--port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and r.stderr.startswith("Error: ") and "http://" not in r.stdout
    assert len(r.stderr.strip().splitlines()) == 1


def _hidden(world: Path) -> list[str]:
    return sorted(p.name for p in world.iterdir() if p.name.startswith("."))


def test_kill_9_during_a_write_then_restart(world: Path) -> None:
    new = _split(5, 1000, seed=4)
    body = {"codes": [code_to_hex(c) for c in new.codes], "ids": new.ids.tolist(),
            "labels": new.labels.tolist(), "paths": list(new.paths)}  # fmt: skip
    args = ("--allow-writes", "--token-file", str(world / "token"))
    server = Server(world, *args, env={"FGHASH_KILL_AT": "commit:codes-renamed"})
    try:
        with pytest.raises(OSError):  # the connection dies with the server
            server.post("/indexes/b/items", body, token=TOKEN)
        assert server.proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        server.stop()
    server = Server(world, *args)  # the reader's open finishes the dead writer's change
    try:
        listed = server.get("/indexes")[0]
        assert listed["ntotal"] in (120, 125)
        assert listed["ntotal"] == 125  # the journal was written: rolled forward
        got = server.post("/indexes/b/search", {"ids": [1004], "k": 1})
        assert got["results"][0]["results"][0]["id"] == 1004
        assert server.stop() == 0
    finally:
        server.stop()
    r = subprocess.run(
        [sys.executable, "-m", "fghash", "info", str(world / "b"), "--verify"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert _hidden(world) == []
