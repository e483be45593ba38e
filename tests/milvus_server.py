"""A real Milvus server for the tests: the ``milvus`` package's standalone binary.

The ``milvus`` PyPI package ("Embedded Milvus", 2.3.5) ships the Milvus standalone server
(etcd, storage and message queue embedded) as compressed files. :class:`MilvusServer`
unpacks them into a temporary base folder, writes a configuration whose every port is a
free one the operating system picked, starts the server as a child process (killed with
this process should it die first), waits, bounded, until pymilvus can talk to it, and on
:meth:`MilvusServer.stop` ends it (SIGTERM, then SIGKILL) and removes the folder.

The tests use it through a session-scoped fixture (tests/test_milvus_server.py); it is
skipped when the package is not installed (``pip install milvus==2.3.5``; Linux x86_64).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

__all__ = ["MilvusServer", "free_ports"]

# The configuration template's port keys (milvus 2.3.5's config.yaml.template).
_PORT_KEYS = (
    "etcd_port",
    "root_coord_port",
    "proxy_port",
    "proxy_internal_port",
    "query_coord_port",
    "query_node_port",
    "index_coord_port",
    "index_node_port",
    "data_coord_port",
    "data_node_port",
)


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the parent dies (Linux prctl)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class MilvusServer:
    """One Milvus standalone server on 127.0.0.1; :attr:`uri` is its address."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="fghash-milvus-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._logs: list[Any] = []

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90.0) -> str:
        """Start the server and wait until pymilvus lists its collections; its URI."""
        import milvus

        ports = free_ports(len(_PORT_KEYS) + 1)
        config = milvus.MilvusServerConfig(
            data_dir=str(self.base), **dict(zip(_PORT_KEYS, ports, strict=False))
        )
        config.resolve()  # binds each port for a moment, writes configs/milvus.yaml
        self._embedded_etcd(config, ports[0], free_ports(1)[0])
        milvus._initialize_data_files(str(self.base))  # unpack the server's binaries
        self.port = int(config.get("proxy_port"))
        binary = self.base / "bin" / "milvus"
        env = dict(os.environ)
        env.update(
            DEPLOY_MODE="STANDALONE",
            METRICS_PORT=str(ports[-1]),
            MILVUS_RUN_DIR=str(self.base / "run"),
            LD_LIBRARY_PATH=f"{binary.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}",
        )
        self._logs = [open(self.base / "logs" / f"milvus-{n}.log", "wb") for n in ("out", "err")]
        self.proc = subprocess.Popen(
            [str(binary), "run", "standalone"],
            cwd=self.base,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._logs[0],
            stderr=self._logs[1],
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )
        self._wait_ready(time.monotonic() + timeout_s)
        return self.uri

    def _embedded_etcd(self, config: Any, client_port: int, peer_port: int) -> None:
        """Point the embedded etcd at free ports too (it listens on 2379 and 2380 unless
        ``etcd.config.path`` names a configuration of its own)."""
        etcd = self.base / "configs" / "etcd.yaml"
        client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
        etcd.write_text(
            f"name: fghash-test\ndata-dir: {config.get('etcd_data_dir')}\n"
            f"listen-client-urls: {client}\nadvertise-client-urls: {client}\n"
            f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
            f"initial-cluster: fghash-test={peer}\n"
        )
        yaml = self.base / "configs" / "milvus.yaml"
        text = yaml.read_text()
        yaml.write_text(text.replace("\netcd:\n", f"\netcd:\n  config:\n    path: {etcd}\n", 1))

    def _wait_ready(self, deadline: float) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pymilvus import MilvusClient
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the Milvus server exited with {self.proc.returncode}: {self.log_tail()}"
                )
            try:
                client = MilvusClient(self.uri, timeout=5)
                client.list_collections()
                client.close()
                return
            except Exception as e:  # not up yet: connection refused, not ready
                last = e
                time.sleep(0.5)
        raise TimeoutError(f"the Milvus server did not answer in time ({last}): {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        """The last characters of the server's stderr and stdout logs."""
        out = []
        for name in ("err", "out"):
            p = self.base / "logs" / f"milvus-{name}.log"
            if p.exists():
                out.append(p.read_bytes()[-chars:].decode("utf-8", "replace"))
        return "\n".join(out)

    def stop(self, timeout_s: float = 3.0) -> None:
        """End the server (SIGTERM, SIGKILL after ``timeout_s``: its graceful stop can take
        20 s, and its data are thrown away) and remove its folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        for f in self._logs:
            f.close()
        self._logs = []
        shutil.rmtree(self.base, ignore_errors=True)
