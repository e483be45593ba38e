"""``fghash serve`` on loopback against the same searches done in-process, in one run.

With a flat bundle of ``--n`` × 64-bit codes (a clustered codes file from
:mod:`bench.scripts.make_codes`, made once in ``--workdir``) served by a real
``fghash serve`` process on a free loopback port, it measures:

- **one code per request**, ``k = 10``, at concurrency 1, 4 and 16 (client threads with
  one keep-alive connection each): requests/s, p50/p95/p99 latency and errors, each row
  bounded by ``--seconds``; against :func:`index.items.search_items` of one code
  in-process (the loaded index and items, as the server holds them);
- **batches** of ``--batch`` codes per request at concurrency 1: queries/s of the server
  against in-process queries/s of the same batches;
- **image queries** with ``--image-bundle B`` (the demo's index, whose run encodes
  them): images/s and p99 of ``POST /search/image`` against ``fghash.load(run).encode``
  of the same images in-process (skipped without it);
- **start-up** with ``--startup-n`` items (10M in the issue): seconds from process start
  to a ``/health`` answer, and the server's resident memory against the codes' bytes,
  also less that of a server of 1000 items (the interpreter, FAISS and FastAPI).

The client shares the machine's cores with the server, so a 2-core machine measures
both; figures are ratios within one run. Print a table; ``--json`` writes the figures.

    python -m bench.scripts.bench_serve --n 1000000 --workdir /tmp/serve --seconds 10
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]


def _bundle(workdir: Path, n: int) -> tuple[Path, Path]:
    from bench.scripts.make_codes import make_clustered_codes
    from index import build_bundle

    workdir.mkdir(parents=True, exist_ok=True)
    codes = workdir / f"codes-{n}.h5"
    if not codes.exists():
        make_clustered_codes(codes, n=n, nq=2000, bits=64, dim=0, classes=200)
    bundle = workdir / f"flat-{n}"
    if not bundle.exists():
        build_bundle(codes, bundle, device="cpu")
    return codes, bundle


class Server:
    """``fghash serve BUNDLE`` on a free loopback port, stopped with SIGTERM on exit."""

    def __init__(self, bundle: Path, *extra: str) -> None:
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fghash", "serve", str(bundle), "--port", "0", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.url = self._wait_url()
        self.host, port = self.url[len("http://") :].rsplit(":", 1)
        self.port = int(port)
        self.name = bundle.name
        self.ready_s = self._wait_health()

    def _wait_url(self) -> str:
        deadline = time.monotonic() + 300
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("fghash serve exited before it printed its URL")
            found = re.search(r"http://[^\s/]+", line)
            if found:
                return found.group(0)
        raise RuntimeError("fghash serve printed no URL in 300 s")

    def _wait_health(self) -> float:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return time.perf_counter() - self.started
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("fghash serve did not answer /health in 300 s")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _load(server: Server, bodies: list[bytes], threads: int, seconds: float) -> dict[str, Any]:
    """Post ``bodies`` round-robin from ``threads`` keep-alive connections for ``seconds``."""
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    path = f"/indexes/{server.name}/search"

    def worker(offset: int) -> None:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        mine, i = [], offset
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                conn.request(
                    "POST", path, bodies[i % len(bodies)], {"Content-Type": "application/json"}
                )
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except OSError:
                ok = False
                conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
            mine.append(time.perf_counter() - t)
            if not ok:
                with lock:
                    errors[0] += 1
            i += threads
        with lock:
            lat.extend(mine)

    pool = [threading.Thread(target=worker, args=(j,)) for j in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1e3
    return {
        "concurrency": threads,
        "requests": len(lat),
        "rps": len(lat) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": errors[0],
    }


def _in_process(bundle: Path, queries: np.ndarray, batch: int, seconds: float) -> dict[str, Any]:
    from index import load_index
    from index.items import search_items

    index, items = load_index(bundle)
    one, t0, n = [], time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds / 2:
        t = time.perf_counter()
        search_items(index, items, queries[n % len(queries)][None], 10)
        one.append(time.perf_counter() - t)
        n += 1
    t0, nq = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds / 2:
        s = (nq // batch * batch) % (len(queries) - batch)
        search_items(index, items, queries[s : s + batch], 10)
        nq += batch
    return {
        "one_p50_ms": statistics.median(one) * 1e3,
        "one_per_s": len(one) / sum(one),
        "batch_qps": nq / (time.perf_counter() - t0),
    }


def _images(bundle: Path, seconds: float) -> dict[str, Any] | None:
    """Image queries on ``bundle`` (its run encodes them), server against in-process."""
    from fghash.client import Client
    from fghash.encoding.image_query import query_run
    from index import read_bundle_meta

    run = query_run(None, read_bundle_meta(bundle), bundle)
    data = Path(json.loads((run / "config.json").read_text())["data_root"])
    images = sorted(data.rglob("*.png"))[:32]
    with Server(bundle) as server:
        return _image_rows(server, run, images, seconds, Client(server.url))


def _image_rows(
    server: Server, run: Path, images: list[Path], seconds: float, client: Any
) -> dict[str, Any]:
    from fghash import load

    lat, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        client.search_images(server.name, [images[len(lat) % len(images)]], k=10)
        lat.append(time.perf_counter() - t)
    encoder = load(run, device="cpu")
    encoder.encode([images[0]])  # the first call builds the network
    enc, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        encoder.encode([images[len(enc) % len(images)]])
        enc.append(time.perf_counter() - t)
    return {
        "server_images_per_s": len(lat) / sum(lat),
        "server_p99_ms": float(np.percentile(np.array(lat) * 1e3, 99)),
        "in_process_images_per_s": len(enc) / sum(enc),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure the module docstring lists."""
    from fghash.codes import code_to_hex, read_codes

    codes, bundle = _bundle(args.workdir, args.n)
    q = read_codes(codes, splits=["query"])["query"].codes
    one = [json.dumps({"codes": [code_to_hex(c)], "k": 10}).encode() for c in q[:500]]
    batches = [
        json.dumps({"codes": [code_to_hex(c) for c in q[s : s + args.batch]], "k": 10}).encode()
        for s in range(0, len(q) - args.batch + 1, args.batch)
    ]
    out: dict[str, Any] = {
        "n": args.n,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    with Server(bundle) as server:
        out["single"] = [_load(server, one, c, args.seconds) for c in (1, 4, 16)]
        row = _load(server, batches, 1, args.seconds)
        row["qps"] = row["rps"] * args.batch
        out["batch"] = row
    out["images"] = _images(args.image_bundle, args.seconds) if args.image_bundle else None
    out["in_process"] = _in_process(bundle, q, args.batch, args.seconds)
    out["batch"]["ratio_to_in_process"] = out["batch"]["qps"] / out["in_process"]["batch_qps"]
    if args.startup_n:
        _, tiny = _bundle(args.workdir, 1000)
        with Server(tiny) as server:
            empty_mb = server.rss_mb()  # the interpreter, FAISS, FastAPI: no index to speak of
        _, sb = _bundle(args.workdir, args.startup_n)
        with Server(sb) as server:
            out["startup"] = {
                "n": args.startup_n,
                "seconds": server.ready_s,
                "rss_mb": server.rss_mb(),
                "empty_server_mb": empty_mb,
                "codes_mb": args.startup_n * 8 / 2**20,
            }
    return out


def _print(res: dict[str, Any]) -> None:
    print(f"fghash serve, {res['n']} x 64-bit flat, {res['machine']}, {res['date']}")
    for r in res["single"]:
        print(
            f"  1 code/request, concurrency {r['concurrency']:2d}: {r['rps']:8.1f} req/s, "
            f"p50 {r['p50_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
            f"errors {r['errors']}"
        )
    ip = res["in_process"]
    print(f"  in-process, 1 code: p50 {ip['one_p50_ms']:.3f} ms ({ip['one_per_s']:.0f}/s)")
    b = res["batch"]
    print(
        f"  batches: server {b['qps']:.0f} queries/s, in-process {ip['batch_qps']:.0f} "
        f"queries/s, ratio {b['ratio_to_in_process']:.2f}"
    )
    if res.get("images"):
        im = res["images"]
        print(
            f"  images: server {im['server_images_per_s']:.1f}/s (p99 {im['server_p99_ms']:.0f} "
            f"ms), in-process encode {im['in_process_images_per_s']:.1f}/s"
        )
    if res.get("startup"):
        s = res["startup"]
        above = s["rss_mb"] - s["empty_server_mb"]
        print(
            f"  start-up at {s['n']}: {s['seconds']:.2f} s to /health, RSS {s['rss_mb']:.0f} MB "
            f"({above:.0f} MB above a server of 1000 items) for {s['codes_mb']:.0f} MB of codes "
            f"({above / s['codes_mb']:.2f}x)"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.scripts.bench_serve", description=__doc__.splitlines()[0]
    )
    p.add_argument("--n", type=int, default=1_000_000, help="items in the served bundle")
    p.add_argument("--batch", type=int, default=100, help="codes per batch request")
    p.add_argument("--seconds", type=float, default=10.0, help="time bound of each row (≤ 60)")
    p.add_argument(
        "--image-bundle", type=Path, help="a bundle with a run, for image queries (the demo's)"
    )
    p.add_argument("--startup-n", type=int, default=0, help="also time start-up at this size")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fghash-serve")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    args.seconds = min(args.seconds, 60.0)
    res = measure(args)
    _print(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
