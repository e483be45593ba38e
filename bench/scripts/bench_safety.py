"""What the many-writers machinery costs one uncontended ``add`` and one ``search``.

At ``--n`` items (64-bit codes, a clustered codes file from :mod:`bench.scripts.make_codes`,
made once in ``--workdir``, with a flat bundle built from it) it times, each the median of
``--repeat`` runs in this process:

- **search**: :func:`index.search_bundle` of one hex code, ``k=10`` (the bundle opened,
  its items read, the search, the result records), against the parts of it that exist
  for many writers: :func:`index.snapshot.tidy` on a clean bundle (one folder listing and
  the read of ``index.json`` that finds the codes file) and
  :func:`index.snapshot.read_snapshot` around a read that does nothing (the folder
  opened, its inode compared before and after);
- **add**: :func:`index.append.add_to_bundle` of ``--add`` new items (codes file and
  bundle rewritten, journal, switch), against the parts that exist for many writers:
  taking and dropping the two writer locks (bundle, codes file), :func:`recover` on a
  clean bundle, writing and deleting the journal, and one atomic exchange of two folders
  (the alternative being two renames).

The "share" column is those parts over the whole command; the goal is under 5 %.

    python -m bench.scripts.bench_safety --n 1000000 --workdir /tmp/safety
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "measure"]


def _median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _new_items(n: int, first_id: int, bits: int, seed: int) -> Any:
    from fghash.codes import Split, pack_bits

    rng = np.random.default_rng(seed)
    return Split(
        codes=pack_bits(rng.integers(0, 2, size=(n, bits)).astype(bool)),
        ids=np.arange(first_id, first_id + n, dtype=np.int64),
        labels=rng.integers(0, 200, size=n),
    )


def _search_parts(bundle: Path, repeat: int) -> dict[str, float]:
    from index import search_bundle
    from index.snapshot import read_snapshot, tidy

    code = "00" * 8
    whole = _median_ms(lambda: search_bundle(bundle, 10, code=code, device="cpu"), repeat)
    t_tidy = _median_ms(lambda: tidy(bundle), repeat)
    t_snap = _median_ms(lambda: read_snapshot(bundle, lambda f: None), repeat)
    return {"whole_ms": whole, "tidy_ms": t_tidy, "snapshot_ms": t_snap}


def _add_parts(bundle: Path, codes: Path, n_add: int, repeat: int) -> dict[str, float]:
    from fghash.util.atomic import atomic_write_text
    from fghash.util.locks import writer_lock
    from index.append import add_to_bundle
    from index.snapshot import exchange, journal_path, recover

    next_id = [10**9]

    def add() -> None:
        new = _new_items(n_add, next_id[0], 64, next_id[0] % 1000)
        next_id[0] += n_add
        add_to_bundle(bundle, 64, new)

    def locks() -> None:
        with writer_lock(bundle), writer_lock(codes):
            pass

    def journal() -> None:
        j = journal_path(bundle)
        atomic_write_text(j, json.dumps({"bundle": str(bundle)}) + "\n")
        j.unlink()

    with tempfile.TemporaryDirectory(dir=bundle.parent) as d:
        a, b = Path(d, "a"), Path(d, "b")
        a.mkdir()
        b.mkdir()
        t_exchange = _median_ms(lambda: exchange(a, b), repeat)
    whole = _median_ms(add, repeat)
    return {
        "whole_ms": whole,
        "locks_ms": _median_ms(locks, repeat),
        "recover_ms": _median_ms(lambda: recover(bundle), repeat),
        "journal_ms": _median_ms(journal, repeat),
        "exchange_ms": t_exchange,
    }


def measure(n: int, workdir: Path, *, n_add: int = 100, repeat: int = 5) -> dict[str, Any]:
    """The figures the module docstring lists, for ``n`` items in ``workdir``."""
    from bench.scripts.make_codes import make_clustered_codes
    from index import build_bundle

    workdir.mkdir(parents=True, exist_ok=True)
    codes = workdir / f"codes-{n}.h5"
    if not codes.exists():
        make_clustered_codes(codes, n=n, nq=10, bits=64, dim=0, classes=200)
    work = Path(tempfile.mkdtemp(dir=workdir))
    work_codes = work / "c.h5"
    shutil.copyfile(codes, work_codes)  # the add rewrites it
    bundle = work / "b"
    build_bundle(work_codes, bundle, device="cpu")
    search = _search_parts(bundle, repeat)
    add = _add_parts(bundle, work_codes, n_add, repeat)
    search["share_pct"] = 100 * (search["tidy_ms"] + search["snapshot_ms"]) / search["whole_ms"]
    parts = ("locks_ms", "recover_ms", "journal_ms", "exchange_ms")
    add["share_pct"] = 100 * sum(add[p] for p in parts) / add["whole_ms"]
    return {
        "n": n,
        "add_items": n_add,
        "repeat": repeat,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "search": search,
        "add": add,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.scripts.bench_safety", description=__doc__.splitlines()[0]
    )
    p.add_argument("--n", type=int, default=1_000_000, help="items in the bundle")
    p.add_argument("--add", type=int, default=100, help="items per add")
    p.add_argument("--repeat", type=int, default=5, help="runs per timing (median)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fghash-safety")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    res = measure(args.n, args.workdir, n_add=args.add, repeat=args.repeat)
    for what in ("search", "add"):
        row = res[what]
        parts = ", ".join(f"{k[:-3]} {v:.3f} ms" for k, v in row.items() if k.endswith("_ms"))
        print(f"{what:6s} n={res['n']}: {parts}; share {row['share_pct']:.2f} %")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
