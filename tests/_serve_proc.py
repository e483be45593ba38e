"""A real ``fghash serve`` process on a free loopback port, for the client and browser tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["free_port", "serving"]

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback port nothing listens on now (the OS's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(args: Sequence[object], log: Path, start_s: float = 60) -> Iterator[str]:
    """Run ``fghash serve ARGS --port P`` until the block ends; yield its URL once
    ``/health`` answers. Its output goes to ``log`` (shown when it fails to start). It is
    stopped with SIGTERM (and killed if it has not exited 15 s later)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "fghash", "serve", *map(str, args), "--port", str(port)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + start_s
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"fghash serve exited {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if json.loads(r.read()).get("status") == "ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"fghash serve did not answer in {start_s} s:\n{log.read_text()}"
                )
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
