"""Reproduce the layouts of the A²-Net paper's Table 1 and Table 2, measured here.

Given a data set, methods and code lengths, this script runs every step a user would run
by hand — ``fghash train``, ``fghash encode``, ``fghash baseline`` — each as its own
subprocess (``python -m fghash ...``) with its log kept in ``OUT/logs/``, then scores
every codes file with bench's own mAP (:mod:`bench.scripts.paper_table`) and writes

* ``table1.md`` / ``table1.json`` — Table 1 layout: rows data set × code length, one
  column per method, % mAP@all;
* ``table2.md`` / ``table2.json`` — Table 2 layout (ablation): rows ADSH → + attention →
  + reconstruction → + decorrelation (= A²-Net) → + self-consistency (journal extension),
  one column per code length, % mAP@all; where the codes files carry ground-truth
  attributes (CUB-200-2011, synthetic), also each row's attribute-awareness score next to
  its rotation null (:mod:`fghash.explain.compare`).

Both state that the numbers were measured by this script (not taken from the paper), with
the data set, the training configuration and the command line. No training code lives
here: training and encoding are exactly the ``fghash`` commands.

Methods (``--methods``)
    deep: ``adsh`` (``--preset adsh``: plain ADSH), ``dpsh``, ``hashnet``,
    ``a2net`` (``--preset a2net``), ``a2net_efficient``, ``a2net+sc`` (``--preset
    +self-consistency``); shallow: ``lsh``, ``pcah``, ``itq``, ``sdh``; and ``float``,
    exact inner-product search over the relaxed codes ``tanh(v)`` of the A²-Net run of
    the same length (of the first deep method when ``a2net`` is not listed) — what
    binarising costs.

Shallow methods are fitted (``fghash baseline``) on backbone features made by
``fghash encode RUN --features backbone``. RUN is ``--shallow-features`` when given (a
run folder; or directly an HDF5 features file, e.g. of an untouched ImageNet backbone),
else the ADSH run of the first code length that this script trains — so the features are
those of ADSH's *trained* backbone, which started from ``--weights`` (ImageNet) when given
and from random weights otherwise. The same features serve every code length.

Runs are shared: Table 2's ``adsh`` row is Table 1's ADSH run, ``+decorrelation`` is the
A²-Net run and ``+self-consistency`` the ``a2net+sc`` run. Existing run folders or codes
files can be supplied with ``--use KEY@BITS=PATH``.

Resumable: a step whose outputs exist is skipped (an interrupted training is continued
with ``fghash train --resume``); ``--force`` redoes every step. ``OUT/steps.json`` records
the command of each output, and a rerun with other options into the same ``OUT`` is
refused rather than mixing configurations. The plan of steps is
:mod:`bench.scripts.reproduce.plan`, their running :mod:`bench.scripts.reproduce.steps`.
Folder layout::

    OUT/runs/<method>/bits-<k>/     fghash train run folders
    OUT/codes/<method>-<k>.h5       codes files (deep: fghash encode; shallow: fghash baseline)
    OUT/features/backbone.h5        backbone features of the shallow methods
    OUT/logs/<step>.log             stdout and stderr of every step
    OUT/table1.{md,json}, OUT/table2.{md,json}

Small CPU run on the embedded synthetic set, then the paper's configuration on a GPU::

    python -m bench.scripts.reproduce_tables --dataset synthetic --data-root data/synthetic \\
        --bits 12,24 --methods adsh,a2net,itq,float --small --out tables/synthetic
    python -m bench.scripts.reproduce_tables --dataset cub --data-root data/CUB_200_2011 \\
        --weights IMAGENET1K_V1 --device cuda --out tables/cub

The paper's published numbers are not printed beside ours: they could not be looked up
reliably here, so none are quoted.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.machine import machine_info, software_info
from bench.scripts.paper_table import build_table, render_table, score_codes, score_float
from bench.scripts.reproduce.plan import (
    ABLATION,
    DEEP,
    DEFAULT_METHODS,
    FLOAT,
    FLOAT_LABEL,
    SHALLOW,
    SMALL_TRAIN_ARGS,
    Plan,
    make_plan,
    parse_use,
    split_list,
)
from bench.scripts.reproduce.steps import StepFailed, run_steps
from fghash.errors import FghashError
from fghash.eval.metrics import TIES
from fghash.explain.compare import awareness_markdown, awareness_rows
from fghash.explain.inputs import load_input
from fghash.runs.config import parse_bits
from fghash.util.atomic import atomic_write_text

__all__ = ["AWARENESS_ROTATIONS", "reproduce_tables", "main"]

AWARENESS_ROTATIONS = 20  # random rotations in the attribute-awareness null of Table 2


def _score(plan: Plan, dataset: str, ties: str) -> list[dict[str, Any]]:
    scored = []
    for e in plan.entries:
        if e["score"] == "float":
            s = score_float(Path(e["path"]), "ip", dataset=dataset, progress=False)
        else:
            s = score_codes(Path(e["path"]), ties, dataset=dataset, progress=False)
        if s["bits"] != e["bits"]:
            raise FghashError(
                f"{e['path']} holds {s['bits']}-bit codes, but it stands for {e['key']} at "
                f"{e['bits']} bits; check --use."
            )
        s.update(table=e["table"], key=e["key"], method=e["label"], file_method=s["method"])
        scored.append(s)
    return scored


def _awareness(entries: Sequence[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Attribute awareness of each Table-2 codes file; empty when none has attributes."""
    inputs = [load_input(Path(e["path"])) for e in entries]
    names = [f"{e['method']}, {e['bits']} bits" for e in entries]
    rows = awareness_rows(inputs, names=names, rotations=AWARENESS_ROTATIONS, seed=seed)
    return rows if any("per_bit" in r for r in rows) else []


def _describe_config(train_args: Sequence[str], small: bool) -> str:
    if not train_args:
        return "the paper's configuration (the `fghash train` defaults, see fghash/runs/config.py)"
    what = "a small CPU configuration (`--small`)" if small else "custom options"
    return f"{what}: `fghash train {shlex.join(train_args)}`"


def _markdown(
    which: str,
    table: dict[str, Any],
    entries: Sequence[dict[str, Any]],
    info: dict[str, Any],
) -> str:
    title = {
        "1": "Table 1 layout: % mAP of each method (columns) per code length (rows)",
        "2": "Table 2 layout: ablation from ADSH to A²-Net and self-consistency, % mAP",
    }[which]
    e0 = entries[0]
    lines = [
        f"## {title}",
        "",
        "**Measured by `bench/scripts/reproduce_tables.py` on this machine — these are not the "
        "paper's published numbers.**",
        "",
        f"- Data set: `{info['dataset']}` (root `{info['data_root']}`), {e0['n_query']} "
        f"queries (test split) against {e0['n_database']} database items (training split).",
        f"- Training: {info['config_text']}; seed {info['seed']}; device `{info['device']}`.",
    ]
    if info["use"]:
        lines.append(
            "- Not made by this run, given with `--use`: "
            + ", ".join(f"`{u}`" for u in info["use"])
            + "."
        )
    if which == "1":
        if info["shallow_features"]:
            lines.append(
                f"- Shallow methods: `fghash baseline` on backbone features "
                f"`{info['shallow_features']}` ({info['shallow_features_from']})."
            )
        if info["float_source"]:
            lines.append(
                f"- {FLOAT_LABEL}: exact inner-product search over the relaxed codes tanh(v) "
                f"of the {DEEP[info['float_source']][0]} run of each length, no binarisation "
                "(shown for reference, never bold)."
            )
    lines += [
        f"- Hardware: {info['machine']}.",
        "",
        render_table(table, info["ties"]).rstrip(),
        "",
        f"Command: `{info['command']}`",
    ]
    return "\n".join(lines) + "\n"


def _machine_text() -> str:
    m = machine_info()
    gpus = m.get("faiss_gpus") or 0
    return f"{m['cpu_model']}, {m['cpu_cores_usable']} usable cores" + (
        f", {gpus} GPU(s) visible to FAISS" if gpus else ""
    )


def _check_options(outp: Path, tables: Sequence[str], device: str, ties: str) -> None:
    if ties not in TIES:
        raise FghashError(f"--ties must be one of {', '.join(TIES)}, got {ties!r}.")
    if device not in ("auto", "cpu", "cuda"):
        raise FghashError(f"--device must be auto, cpu or cuda, got {device!r}.")
    bad = [t for t in tables if t not in ("1", "2")]
    if bad or not tables:
        raise FghashError("--table must be 1, 2 or both.")
    if outp.exists() and not outp.is_dir():
        raise FghashError(f"--out {outp} exists and is not a folder.")


def _table_doc(
    which: str,
    layout: str,
    table: dict[str, Any],
    ent: list[dict[str, Any]],
    settings: dict[str, Any],
    info: dict[str, Any],
) -> dict[str, Any]:
    """``table<which>.json``: the table, its entries, and everything that made them."""
    return {
        "format": "fghash.reproduce_tables",
        "version": 1,
        "table": which,
        "layout": layout,
        "measured_by": "bench/scripts/reproduce_tables.py (not the paper's numbers)",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": settings["command"],
        "dataset": settings["dataset"],
        "data_root": settings["data_root"],
        "train_args": settings["train_args"],
        "small": settings["small"],
        "seed": settings["seed"],
        "device": settings["device"],
        "ties": settings["ties"],
        "metric": "map@all (percent in table, fraction in entries)",
        "float_source": info["float_source"] if which == "1" else None,
        "shallow_features": info["shallow_features"] if which == "1" else None,
        "machine": machine_info(),
        "software": software_info(),
        "steps": settings["steps"],
        "wall_seconds": round(time.perf_counter() - settings["t0"], 1),
        "table_data": table,
        "entries": ent,
    }


def _write_tables(
    outp: Path,
    tables: Sequence[str],
    scored: list[dict[str, Any]],
    settings: dict[str, Any],
    info: dict[str, Any],
) -> list[Path]:
    """``table<N>.md`` and ``table<N>.json`` of each table asked for; Table 2 adds the
    attribute awareness of its codes files when they carry attributes."""
    written = []
    for which in ("1", "2"):
        if which not in tables:
            continue
        ent = [e for e in scored if e["table"] == which]
        layout = "dataset" if which == "1" else "ablation"
        table = build_table(ent, layout, reference=[FLOAT_LABEL])
        doc = _table_doc(which, layout, table, ent, settings, info)
        md = _markdown(which, table, ent, info)
        if which == "2":
            doc["awareness"] = _awareness(ent, settings["seed"])
            if doc["awareness"]:
                md += "\n### Attribute awareness\n\n"
                md += "\n".join(awareness_markdown(doc["awareness"], AWARENESS_ROTATIONS)) + "\n"
        written.append(atomic_write_text(outp / f"table{which}.md", md))
        written.append(
            atomic_write_text(outp / f"table{which}.json", json.dumps(doc, indent=1) + "\n")
        )
    return written


def reproduce_tables(
    out: str | os.PathLike[str],
    *,
    dataset: str,
    data_root: str,
    methods: Sequence[str] = tuple(DEFAULT_METHODS.split(",")),
    bits: Sequence[int] = (12, 24, 32, 48),
    tables: Sequence[str] = ("1", "2"),
    ablation: Sequence[str] = tuple(ABLATION),
    ablation_bits: Sequence[int] | None = None,
    small: bool = False,
    train_args: Sequence[str] = (),
    weights: str | None = None,
    use: Sequence[str] = (),
    shallow_features: str | os.PathLike[str] | None = None,
    seed: int = 0,
    device: str = "auto",
    ties: str = "tie-aware",
    force: bool = False,
    command: str | None = None,
) -> list[Path]:
    """Run (or reuse) every step, score, and write the requested tables; returns the paths."""
    outp = Path(out)
    _check_options(outp, tables, device, ties)
    args = [*(SMALL_TRAIN_ARGS if small else ()), *train_args]
    if weights:
        args += ["--weights", weights]
    sf = Path(shallow_features) if shallow_features is not None else None
    if sf is not None and not sf.exists():
        raise FghashError(f"--shallow-features {sf} does not exist.")
    plan = make_plan(
        outp,
        dataset,
        str(data_root),
        list(methods),
        list(bits),
        list(tables),
        list(ablation),
        list(ablation_bits or bits),
        args,
        parse_use(use),
        sf,
        seed,
        device,
    )
    outp.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    steps = run_steps(outp, plan.steps, force=force)
    scored = _score(plan, dataset, ties)
    info = {
        "dataset": dataset,
        "data_root": str(data_root),
        "config_text": _describe_config(args, small),
        "seed": seed,
        "device": device,
        "ties": ties,
        "machine": _machine_text(),
        "command": command or "(called from Python)",
        "shallow_features": str(plan.shallow_features) if plan.shallow_features else None,
        "shallow_features_from": (
            "given with --shallow-features"
            if sf is not None
            else f"`fghash encode --features backbone` of the ADSH run at {list(bits)[0]} bits"
        ),
        "float_source": plan.float_source,
        "use": list(use),
    }
    settings = dict(
        command=command, dataset=dataset, data_root=str(data_root), train_args=args,
        small=small, seed=seed, device=device, ties=ties, steps=steps, t0=t0,
    )  # fmt: skip
    return _write_tables(outp, tables, scored, settings, info)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.scripts.reproduce_tables",
        description=__doc__.splitlines()[0],
        epilog="Steps run as `python -m fghash ...` subprocesses; logs in OUT/logs/.",
    )
    p.add_argument("--dataset", required=True, help="data set name, as `fghash train` takes it")
    p.add_argument("--data-root", required=True, help="folder holding the data set")
    p.add_argument("--out", required=True, help="output folder (runs, codes, logs, tables)")
    p.add_argument("--bits", default="12,24,32,48", help="code lengths of Table 1")
    p.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help=f"Table 1 columns, in order, from: {', '.join([*DEEP, *SHALLOW, FLOAT])}",
    )
    p.add_argument("--table", choices=("1", "2", "both"), default="both")
    p.add_argument(
        "--ablation", default=",".join(ABLATION), help="Table 2 rows, in order (presets)"
    )
    p.add_argument("--ablation-bits", help="code lengths of Table 2 (default: --bits)")
    p.add_argument(
        "--small",
        action="store_true",
        help="small CPU configuration: " + " ".join(SMALL_TRAIN_ARGS),
    )
    p.add_argument(
        "--train-args",
        default="",
        help="extra `fghash train` options for every run (after --small's; later wins)",
    )
    p.add_argument("--weights", help="torchvision weights of the backbone, e.g. IMAGENET1K_V1")
    p.add_argument(
        "--use",
        action="append",
        default=[],
        metavar="METHOD@BITS=PATH",
        help="an existing run folder or codes file instead of training (repeatable)",
    )
    p.add_argument(
        "--shallow-features",
        help="run folder (encoded with --features backbone) or HDF5 features file for lsh/pcah/itq/sdh",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--ties", choices=TIES, default="tie-aware")
    p.add_argument("--force", action="store_true", help="redo every step")
    return p


def _log_progress() -> None:
    """The steps' progress on stderr (only this script's loggers, not every library's)."""
    steps_log = logging.getLogger("bench.scripts.reproduce")
    if not steps_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        steps_log.addHandler(handler)
        steps_log.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = _parser().parse_args(argv)
    command = shlex.join(["python", "-m", "bench.scripts.reproduce_tables", *argv])
    _log_progress()
    try:
        paths = reproduce_tables(
            a.out,
            dataset=a.dataset,
            data_root=a.data_root,
            methods=split_list(a.methods, "--methods"),
            bits=parse_bits(a.bits),
            tables=("1", "2") if a.table == "both" else (a.table,),
            ablation=split_list(a.ablation, "--ablation"),
            ablation_bits=parse_bits(a.ablation_bits) if a.ablation_bits else None,
            small=a.small,
            train_args=shlex.split(a.train_args),
            weights=a.weights,
            use=a.use,
            shallow_features=a.shallow_features,
            seed=a.seed,
            device=a.device,
            ties=a.ties,
            force=a.force,
            command=command,
        )
    except StepFailed as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code
    except FghashError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        if path.suffix == ".md":
            print(path.read_text())
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
