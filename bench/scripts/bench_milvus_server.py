"""The Milvus backend on a Milvus server: build time, search equality and speed, one run.

With a clustered codes file of ``--n`` codes (:mod:`bench.scripts.make_codes`, made once
in ``--workdir``) and a Milvus server at ``--uri``, it builds a ``BIN_FLAT`` and a
``BIN_IVF_FLAT`` collection through :func:`index.milvus.build_milvus_bundle` (timed:
insert, flush, index, load) beside a FAISS flat bundle, then searches ``--nq`` queries at
``k`` on each: whether the answer equals brute force tie-aware (the FAISS flat answer's
distances, and the items' true distances) and queries/s; ``BIN_IVF_FLAT`` at
``nprobe = nlist`` (exact) and at ``--nprobe`` (recall@k counted tie-aware, a result
counting when its distance is at most the true k-th). Prints a table.

A server for it: the ``milvus`` package's standalone build (``pip install milvus==2.3.5``)::

    milvus-server --data /tmp/milvus-data &     # listens on 127.0.0.1:19530
    python -m bench.scripts.bench_milvus_server --uri http://127.0.0.1:19530 --n 100000
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.scripts.make_codes import make_clustered_codes
from fghash.codes import read_codes

__all__ = ["main"]


_POPCOUNT = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)


def _hamming(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    """Brute-force Hamming distances ``[nq, n]``, 32 queries at a time."""
    out = np.empty((len(q), len(db)), dtype=np.int32)
    for s in range(0, len(q), 32):
        out[s : s + 32] = _POPCOUNT[q[s : s + 32, None, :] ^ db[None]].sum(-1, dtype=np.int32)
    return out


def _timed(fn, *args, **kw):  # noqa: ANN001, ANN202 - a stopwatch
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def _row(name: str, index, q: np.ndarray, k: int, ref_d: np.ndarray, dist, **kw) -> str:  # noqa: ANN001
    """One table row: equality with the exact answer, tie-aware recall@k and queries/s."""
    index.search(q[:10], k, **kw)  # warm: load, connections
    (D, I), secs = _timed(index.search, q, k, **kw)
    true_d = np.take_along_axis(dist, np.where(I >= 0, I, 0), axis=1)
    honest = bool(((I < 0) | (true_d == D)).all())  # every distance reported is the true one
    hits = ((I >= 0) & (true_d <= ref_d[:, -1:])).sum(axis=1)
    recall = float(np.mean(hits / k))
    exact = honest and np.array_equal(D, ref_d)
    return f"| {name} | {'yes' if exact else 'no'} | {recall:.4f} | {len(q) / secs:,.0f} |"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.scripts.bench_milvus_server", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--uri", required=True, help="Milvus server, http://host:19530")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--nlist", type=int, default=256)
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bench-milvus")
    a = p.parse_args(argv)

    from index import build_bundle, load_index
    from index.milvus import build_milvus_bundle

    a.workdir.mkdir(parents=True, exist_ok=True)
    codes = a.workdir / f"c{a.n}-{a.bits}.h5"
    if not codes.exists():
        make_clustered_codes(codes, n=a.n, nq=a.nq, bits=a.bits, dim=0)
    cf = read_codes(codes)
    q, db = cf["query"].codes[: a.nq], cf["database"].codes
    dist = _hamming(q, db)
    ref_d = np.sort(dist, axis=1)[:, : a.k]

    _, faiss_s = _timed(build_bundle, codes, a.workdir / "flat", device="cpu", overwrite=True)
    flat, _ = load_index(a.workdir / "flat")
    rows = [_row("FAISS flat (local)", flat, q, a.k, ref_d, dist)]
    builds = [f"FAISS flat bundle: {faiss_s:.1f} s"]
    for kind, extra in (("BIN_FLAT", {}), ("BIN_IVF_FLAT", {"nlist": a.nlist})):
        (index, _), secs = _timed(
            build_milvus_bundle, codes, a.workdir / kind.lower(), uri=a.uri,
            collection=f"bench_{kind.lower()}", index_type=kind, overwrite=True, **extra,
        )  # fmt: skip
        builds.append(f"Milvus {kind}{f' nlist={a.nlist}' if extra else ''}: {secs:.1f} s")
        if kind == "BIN_FLAT":
            rows.append(_row("Milvus BIN_FLAT", index, q, a.k, ref_d, dist))
        else:
            for nprobe in (a.nlist, a.nprobe):
                name = f"Milvus BIN_IVF_FLAT nprobe={nprobe}"
                rows.append(_row(name, index, q, a.k, ref_d, dist, nprobe=nprobe))
        index.client.drop_collection(index.collection)
    print(f"{a.n:,} × {a.bits}-bit codes, {len(q)} queries, k={a.k}; {platform.node()}")
    print("build: " + "; ".join(builds))
    print("| index | equals brute force | recall@k (tie-aware) | queries/s |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
