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
refused rather than mixing configurations. Folder layout::

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
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from bench.machine import machine_info, software_info
from bench.report import write_text_atomic
from bench.scripts.paper_table import build_table, render_table, score_codes, score_float
from fghash.errors import FghashError
from fghash.eval.metrics import TIES
from fghash.explain.compare import awareness_markdown, awareness_rows
from fghash.explain.inputs import load_input
from fghash.runs.config import parse_bits

__all__ = [
    "DEEP",
    "SHALLOW",
    "FLOAT",
    "ABLATION",
    "SMALL_TRAIN_ARGS",
    "Step",
    "StepFailed",
    "Plan",
    "make_plan",
    "run_steps",
    "reproduce_tables",
    "main",
]

logger = logging.getLogger(__name__)

# method key -> (column label, `fghash train` options that select it, run folder name)
DEEP: dict[str, tuple[str, tuple[str, ...], str]] = {
    "adsh": ("ADSH", ("--preset", "adsh"), "adsh"),
    "dpsh": ("DPSH", ("--method", "dpsh"), "dpsh"),
    "hashnet": ("HashNet", ("--method", "hashnet"), "hashnet"),
    "a2net": ("A²-Net", ("--preset", "a2net"), "a2net"),
    "a2net_efficient": ("A²-Net (efficient)", ("--method", "a2net_efficient"), "a2net_efficient"),
    "a2net+sc": ("A²-Net + self-consistency", ("--preset", "+self-consistency"), "a2net-sc"),
}
SHALLOW: dict[str, str] = {"lsh": "LSH", "pcah": "PCAH", "itq": "ITQ", "sdh": "SDH"}
FLOAT = "float"
FLOAT_LABEL = "float (relaxed features)"
# Table 2 row -> (row label, the run it uses: a DEEP key or an extra run (label, options, folder))
ABLATION: dict[str, tuple[str, str]] = {
    "adsh": ("ADSH", "adsh"),
    "+attention": ("+ attention", "+attention"),
    "+reconstruction": ("+ reconstruction", "+reconstruction"),
    "+decorrelation": ("+ decorrelation (A²-Net)", "a2net"),
    "+self-consistency": ("+ self-consistency", "a2net+sc"),
}
_EXTRA_RUNS: dict[str, tuple[tuple[str, ...], str]] = {
    "+attention": (("--preset", "+attention"), "attention"),
    "+reconstruction": (("--preset", "+reconstruction"), "reconstruction"),
}
DEFAULT_METHODS = "lsh,pcah,itq,sdh,dpsh,hashnet,adsh,a2net,float"

#: ``--small``: a CPU configuration (minutes, not days) — ResNet-18 from random weights,
#: 64-pixel crops, 2 attention maps, 18 outer iterations of 3 epochs over 480 sampled
#: images, lr 0.01 without decay or Nesterov, and the demo's fixes for tiny data sets
#: (``fghash.demo``): soft similarity targets and γ = 20, without which the learned codes
#: collapse to one code.
SMALL_TRAIN_ARGS: tuple[str, ...] = (
    "--weights", "none",
    "--backbone", "resnet18",
    "--image-size", "64",
    "--num-attention", "2",
    "--max-iter", "18",
    "--epochs", "3",
    "--num-samples", "480",
    "--batch-size", "16",
    "--lr", "0.01",
    "--lr-milestones", "",
    "--no-nesterov",
    "--train-crop", "resize-crop",
    "--gamma", "20",
    "--soft-similarity",
)  # fmt: skip

_REPO = Path(__file__).resolve().parents[1]
AWARENESS_ROTATIONS = 20  # random rotations in the attribute-awareness null of Table 2


class StepFailed(FghashError):
    """A ``fghash`` step exited with an error; ``exit_code`` is the step's."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Step:
    """One ``python -m fghash ARGV`` call and the files that show it is done."""

    name: str  # file-name friendly, e.g. "train-a2net-12"
    argv: list[str]  # fghash arguments, without the ones that may change between runs
    outputs: list[Path]  # all exist => done
    run_dir: Path | None = None  # train steps: the run folder (resume, --force)
    extra: list[str] = field(default_factory=list)  # e.g. --device (not part of the record)

    def done(self) -> bool:
        return all(p.exists() for p in self.outputs)


@dataclass
class Plan:
    """Every step, and where each table entry's codes file comes from."""

    steps: list[Step]
    # one per table cell: {"table", "key", "label", "bits", "path", "score": hamming|float}
    entries: list[dict[str, Any]]
    shallow_features: Path | None
    float_source: str | None


def _split_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise FghashError(f"{what} needs at least one name.")
    dup = [t for t in dict.fromkeys(items) if items.count(t) > 1]
    if dup:
        raise FghashError(f"{what} lists {dup[0]!r} twice; give each name once.")
    return items


def _parse_use(specs: Sequence[str]) -> dict[tuple[str, int], Path]:
    known = set(DEEP) | set(SHALLOW) | set(ABLATION)
    out: dict[tuple[str, int], Path] = {}
    for spec in specs:
        key, sep, path = spec.partition("=")
        name, at, bits = key.partition("@")
        if not (sep and at and path) or not bits.isdigit():
            raise FghashError(
                f"--use {spec!r} must look like METHOD@BITS=PATH, e.g. a2net@12=runs/a2net-12."
            )
        if name not in known:
            raise FghashError(
                f"--use {spec!r}: unknown method {name!r}; use one of {', '.join(sorted(known))}."
            )
        p = Path(path)
        if not p.exists():
            raise FghashError(f"--use {spec!r}: {p} does not exist.")
        if name in SHALLOW and p.is_dir():
            raise FghashError(f"--use {spec!r}: a shallow method needs a codes file, not a folder.")
        # Table 2 rows that are Table 1 runs share their --use
        run = ABLATION[name][1] if name in ABLATION else name
        out[(run, int(bits))] = p
    return out


def make_plan(
    out: Path,
    dataset: str,
    data_root: str,
    methods: Sequence[str],
    bits: Sequence[int],
    tables: Sequence[str],
    ablation: Sequence[str],
    ablation_bits: Sequence[int],
    train_args: Sequence[str],
    use: dict[tuple[str, int], Path],
    shallow_features: Path | None,
    seed: int,
    device: str,
) -> Plan:
    """Work out every step and table entry; raises :class:`FghashError` for bad names."""
    for m in methods:
        if m not in DEEP and m not in SHALLOW and m != FLOAT:
            raise FghashError(
                f"unknown method {m!r} in --methods; choose from "
                f"{', '.join([*DEEP, *SHALLOW, FLOAT])}."
            )
    for r in ablation:
        if r not in ABLATION:
            raise FghashError(
                f"unknown ablation row {r!r} in --ablation; choose from {', '.join(ABLATION)}."
            )
    t1 = "1" in tables
    t2 = "2" in tables
    deep1 = [m for m in methods if m in DEEP] if t1 else []
    shallow1 = [m for m in methods if m in SHALLOW] if t1 else []
    float_source = None
    if t1 and FLOAT in methods:
        if not deep1:
            raise FghashError(
                "--methods float needs a deep method (e.g. a2net) whose relaxed codes it searches."
            )
        float_source = "a2net" if "a2net" in deep1 else deep1[0]

    dev = ["--device", device]
    steps: list[Step] = []
    codes_of: dict[tuple[str, int], Path] = {}

    def run_for(run: str, b: int) -> Path | None:
        """Train step for (run, b) unless supplied; returns the run folder (None: a file)."""
        given = use.get((run, b))
        if given is not None:
            return given if given.is_dir() else None
        opts, folder = (DEEP[run][1], DEEP[run][2]) if run in DEEP else _EXTRA_RUNS[run]
        run_dir = out / "runs" / folder / f"bits-{b}"
        name = f"train-{folder}-{b}"
        if not any(s.name == name for s in steps):
            argv = ["train", "--dataset", dataset, "--data-root", data_root]
            argv += ["--out", str(run_dir), "--bits", str(b), *opts, "--seed", str(seed)]
            argv += list(train_args)
            steps.append(Step(name, argv, [run_dir / "database_codes.npy"], run_dir, dev))
        return run_dir

    def codes_for(run: str, b: int) -> Path:
        if (run, b) in codes_of:
            return codes_of[(run, b)]
        run_dir = run_for(run, b)
        if run_dir is None:
            path = use[(run, b)]
        else:
            folder = DEEP[run][2] if run in DEEP else _EXTRA_RUNS[run][1]
            path = out / "codes" / f"{folder}-{b}.h5"
            argv = ["encode", str(run_dir), "--out", str(path), "--features", "relaxed"]
            steps.append(Step(f"encode-{folder}-{b}", argv, [path], None, dev))
        codes_of[(run, b)] = path
        return path

    entries: list[dict[str, Any]] = []
    if t1:
        for b in bits:
            for m in deep1:
                entries.append(dict(table="1", key=m, label=DEEP[m][0], bits=b,
                                    path=codes_for(m, b), score="hamming"))  # fmt: skip
    feats = None
    if shallow1:
        if shallow_features is not None and shallow_features.is_file():
            feats = shallow_features
        else:
            src = shallow_features or run_for("adsh", bits[0])
            if src is None:
                raise FghashError(
                    f"the shallow methods need backbone features: --use gave a codes file for "
                    f"adsh@{bits[0]}, so pass --shallow-features (a run folder or features file)."
                )
            feats = out / "features" / "backbone.h5"
            argv = ["encode", str(src), "--out", str(feats), "--features", "backbone"]
            steps.append(Step("encode-backbone-features", argv, [feats], None, dev))
        for b in bits:
            for m in shallow1:
                given = use.get((m, b))
                path = given if given is not None else out / "codes" / f"{m}-{b}.h5"
                if given is None:
                    argv = ["baseline", m, "--features", str(feats), "--bits", str(b)]
                    argv += ["--out", str(path), "--seed", str(seed)]
                    steps.append(Step(f"baseline-{m}-{b}", argv, [path]))
                entries.append(dict(table="1", key=m, label=SHALLOW[m], bits=b,
                                    path=path, score="hamming"))  # fmt: skip
    if float_source is not None:
        for b in bits:
            entries.append(dict(table="1", key=FLOAT, label=FLOAT_LABEL, bits=b,
                                path=codes_for(float_source, b), score="float"))  # fmt: skip
    if t2:
        for b in ablation_bits:
            for r in ablation:
                label, run = ABLATION[r]
                entries.append(dict(table="2", key=r, label=label, bits=b,
                                    path=codes_for(run, b), score="hamming"))  # fmt: skip
    # Order columns/rows as asked: Table 1 by --methods, Table 2 by --ablation.
    order1 = {m: i for i, m in enumerate(methods)}
    order2 = {r: i for i, r in enumerate(ablation)}
    entries.sort(
        key=lambda e: (e["table"], (order1 if e["table"] == "1" else order2)[e["key"]], e["bits"])
    )
    return Plan(steps, entries, feats if shallow1 else None, float_source)


# --- running the steps ---------------------------------------------------------------


def _records_path(out: Path) -> Path:
    return out / "steps.json"


def _load_records(out: Path) -> dict[str, Any]:
    p = _records_path(out)
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        raise FghashError(f"{p} is not valid JSON; delete it or pass --force.") from None


def _save_records(out: Path, records: dict[str, Any]) -> None:
    write_text_atomic(_records_path(out), json.dumps(records, indent=1, sort_keys=True) + "\n")


def _fghash_command(argv: Sequence[str]) -> str:
    return shlex.join(["python", "-m", "fghash", *argv])


def _last_error_line(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("Error:")]
    return (errors or lines or [""])[-1]


def _run_one(step: Step, log: Path) -> float:
    argv = list(step.argv) + list(step.extra)
    if step.run_dir is not None and (step.run_dir / "checkpoints" / "last.pt").is_file():
        argv.append("--resume")  # an interrupted training: continue it exactly
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_REPO), *filter(None, [env.get("PYTHONPATH")])])
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "a", encoding="utf-8") as fh:
        stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        fh.write(f"# {stamp}\n$ {_fghash_command(argv)}\n")
        fh.flush()
        rc = subprocess.run(
            [sys.executable, "-m", "fghash", *argv],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            check=False,
        ).returncode
        seconds = time.perf_counter() - t0
        fh.write(f"# exit status {rc} after {seconds:.1f} s\n")
    if rc != 0:
        detail = _last_error_line(log)
        raise StepFailed(
            f"step {step.name} failed (exit status {rc}: {detail}); see {log}.", 2 if rc == 2 else 1
        )
    return seconds


def run_steps(out: Path, steps: Sequence[Step], *, force: bool = False) -> list[dict[str, Any]]:
    """Run the steps that are not done (all with ``force``); returns one record per step.

    A step is done when its outputs exist; an existing output made by another command
    (per ``OUT/steps.json``) raises :class:`FghashError` instead of being reused.
    """
    records = _load_records(out)
    done_info: list[dict[str, Any]] = []
    todo = []
    for s in steps:
        key = s.name
        cmd = _fghash_command(s.argv)
        old = records.get(key)
        if not force and old is not None and old.get("command") != cmd:
            raise FghashError(
                f"{out} already holds step {key} made by `{old.get('command')}`, not `{cmd}`; "
                "pass --force to redo it or choose another --out."
            )
        if force or not s.done():
            todo.append(s)
        else:
            done_info.append({"step": key, "command": cmd, "skipped": True})
    logger.info("%d of %d steps to run, %d already done", len(todo), len(steps), len(done_info))
    bar = tqdm(todo, desc="steps", unit="step", disable=None)
    for s in bar:
        bar.set_postfix_str(s.name)
        cmd = _fghash_command(s.argv)
        if force:  # only ever delete what this script made under OUT
            mine = out.resolve()
            if s.run_dir is not None and s.run_dir.is_dir() and mine in s.run_dir.resolve().parents:
                shutil.rmtree(s.run_dir)
            for p in s.outputs:
                if p.is_file() and mine in p.resolve().parents:
                    p.unlink()
        for p in s.outputs:
            p.parent.mkdir(parents=True, exist_ok=True)
        records[s.name] = {"command": cmd, "finished": None}
        _save_records(out, records)
        logger.info("running %s: %s", s.name, cmd)
        seconds = _run_one(s, out / "logs" / f"{s.name}.log")
        stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        records[s.name] = {"command": cmd, "finished": stamp, "seconds": round(seconds, 1)}
        _save_records(out, records)
        done_info.append({"step": s.name, "command": cmd, "skipped": False, "seconds": seconds})
    return done_info


# --- scoring and writing the tables --------------------------------------------------


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
    if ties not in TIES:
        raise FghashError(f"--ties must be one of {', '.join(TIES)}, got {ties!r}.")
    if device not in ("auto", "cpu", "cuda"):
        raise FghashError(f"--device must be auto, cpu or cuda, got {device!r}.")
    bad = [t for t in tables if t not in ("1", "2")]
    if bad or not tables:
        raise FghashError("--table must be 1, 2 or both.")
    outp = Path(out)
    if outp.exists() and not outp.is_dir():
        raise FghashError(f"--out {outp} exists and is not a folder.")
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
        _parse_use(use),
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
    written = []
    for which in ("1", "2"):
        if which not in tables:
            continue
        ent = [e for e in scored if e["table"] == which]
        layout = "dataset" if which == "1" else "ablation"
        table = build_table(ent, layout, reference=[FLOAT_LABEL])
        doc = {
            "format": "fghash.reproduce_tables",
            "version": 1,
            "table": which,
            "layout": layout,
            "measured_by": "bench/scripts/reproduce_tables.py (not the paper's numbers)",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": command,
            "dataset": dataset,
            "data_root": str(data_root),
            "train_args": args,
            "small": small,
            "seed": seed,
            "device": device,
            "ties": ties,
            "metric": "map@all (percent in table, fraction in entries)",
            "float_source": plan.float_source if which == "1" else None,
            "shallow_features": info["shallow_features"] if which == "1" else None,
            "machine": machine_info(),
            "software": software_info(),
            "steps": steps,
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "table_data": table,
            "entries": ent,
        }
        md = _markdown(which, table, ent, info)
        if which == "2":
            doc["awareness"] = _awareness(ent, seed)
            if doc["awareness"]:
                md += "\n### Attribute awareness\n\n"
                md += "\n".join(awareness_markdown(doc["awareness"], AWARENESS_ROTATIONS)) + "\n"
        written.append(write_text_atomic(outp / f"table{which}.md", md))
        written.append(
            write_text_atomic(outp / f"table{which}.json", json.dumps(doc, indent=1) + "\n")
        )
    return written


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
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
    a = p.parse_args(argv)
    command = shlex.join(["python", "-m", "bench.scripts.reproduce_tables", *argv])
    if not logger.handlers:  # this script's progress on stderr, not every library's
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        paths = reproduce_tables(
            a.out,
            dataset=a.dataset,
            data_root=a.data_root,
            methods=_split_list(a.methods, "--methods"),
            bits=parse_bits(a.bits),
            tables=("1", "2") if a.table == "both" else (a.table,),
            ablation=_split_list(a.ablation, "--ablation"),
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
