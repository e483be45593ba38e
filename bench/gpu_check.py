"""One script for everything only a GPU can show: run it the moment a GPU is available.

    python bench/gpu_check.py --out gpu_check.json      # or: python -m bench.gpu_check
    python bench/gpu_check.py --tiny --out tiny.json    # the same code paths on the CPU

Sections, in this order (each a module of :mod:`bench.gpu_checks` with
``check(tiny: bool, device: str) -> dict``):

* ``versions``: Python, torch, CUDA, cuDNN, torchvision, numpy, h5py, FAISS, the GPU;
* ``train_speed``: the training loop against the step ceiling of the same model and
  precision (A²-Net faithful and efficient, ResNet-50, 224 px, batch 16; goal ≥ 0.85×);
* ``resume``: a paper-protocol run of 2 outer iterations on generated 224-px images, run
  straight, interrupted and resumed on the GPU, and resumed on the CPU;
* ``encode_speed``: ``fghash encode`` images/s against the bare backbone's forward
  (goal ≥ 0.8×);
* ``search``: the tensor engine against ``GpuIndexBinaryFlat`` (when faiss-gpu imports;
  skipped with the reason otherwise) and tie-aware mAP at Food-101 size (goal ≤ 1 s);

then any other module a helper drops into ``bench/gpu_checks/`` (alphabetical). The JSON
is rewritten atomically after every section, so a crash or a timeout keeps every section
finished before it; a section that raises records its error and the script goes on.
``--tiny`` (CI) runs every section on the CPU at tiny sizes (ResNet-18 at 32 px, a few
images, small databases): it checks that the paths run, not how fast.

Run from the repository root; fghash is imported from the tree, not an installation.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: import fghash and bench from this tree
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from fghash.util.atomic import atomic_write_text  # noqa: E402

__all__ = ["BUILT_IN", "section_names", "run_section", "main"]

#: The sections this script owns, in running order; helpers' modules run after them.
BUILT_IN = ("versions", "train_speed", "resume", "encode_speed", "search")


def section_names() -> list[str]:
    """:data:`BUILT_IN`, then every other public module of :mod:`bench.gpu_checks`."""
    import bench.gpu_checks as pkg

    found = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name[0] == "_")
    return list(BUILT_IN) + [n for n in found if n not in BUILT_IN]


def run_section(name: str, tiny: bool, device: str) -> dict[str, Any]:
    """Run one section: its result with ``status`` ``ok`` and ``seconds``, or ``status``
    ``error`` with the exception and the end of its traceback."""
    t0 = time.perf_counter()
    try:
        module = importlib.import_module(f"bench.gpu_checks.{name}")
        result = {"status": "ok", **module.check(tiny, device)}
    except Exception as e:  # a failing section must not stop the others
        tb = traceback.format_exc().strip().splitlines()
        result = {"status": "error", "error": f"{type(e).__name__}: {e}", "traceback": tb[-12:]}
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        prog="python bench/gpu_check.py", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON report")
    p.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU (CI)")
    p.add_argument("--device", help="cuda (default) or cpu (default with --tiny)")
    p.add_argument("--only", help="comma-separated section names (default: all)")
    a = p.parse_args(argv)
    device = a.device or ("cpu" if a.tiny else "cuda")
    names = section_names()
    if a.only:
        wanted = [n.strip() for n in a.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            p.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(names)}")
        names = [n for n in names if n in wanted]
    report: dict[str, Any] = {
        "tiny": a.tiny,
        "device": device,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sections": {n: {"status": "pending"} for n in names},
    }

    def save() -> None:
        atomic_write_text(a.out, json.dumps(report, indent=1, default=str) + "\n")

    save()
    for name in names:
        print(f"gpu_check: {name} ...", flush=True)
        report["sections"][name] = run_section(name, a.tiny, device)
        save()
        r = report["sections"][name]
        print(f"gpu_check: {name}: {r['status']} ({r['seconds']} s)", flush=True)
    failed = [n for n, r in report["sections"].items() if r["status"] != "ok"]
    report["failed"] = failed
    save()
    print(f"gpu_check: wrote {a.out}; failed sections: {', '.join(failed) or 'none'}")
    return report


if __name__ == "__main__":
    sys.exit(1 if main()["failed"] else 0)
