"""Running the steps of a reproduce plan: each a ``python -m fghash ...`` subprocess.

A step whose outputs exist is skipped, unless ``force``; an interrupted training is
continued with ``fghash train --resume``. ``OUT/steps.json`` records the command that made
each step's outputs, so a rerun with other options into the same ``OUT`` is refused
instead of mixing configurations. Each step's stdout and stderr go to
``OUT/logs/<step>.log``.
"""

from __future__ import annotations

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
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from bench.scripts.reproduce.plan import Step
from fghash.errors import FghashError
from fghash.runs.folder import CHECKPOINT
from fghash.util.atomic import atomic_write_text

__all__ = ["StepFailed", "run_steps"]

logger = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[3]  # the repository root, put on the steps' PYTHONPATH


class StepFailed(FghashError):
    """A ``fghash`` step exited with an error; ``exit_code`` is the step's."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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
    atomic_write_text(_records_path(out), json.dumps(records, indent=1, sort_keys=True) + "\n")


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
    if step.run_dir is not None and (step.run_dir / CHECKPOINT).is_file():
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
