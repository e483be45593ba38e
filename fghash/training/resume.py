"""What makes a training run resumable: the options that may change, the checkpoint to
continue from, and the metrics log cut back to that checkpoint.

A checkpoint is written once per completed outer iteration; a resumed run starts the
iteration it was in again, and ``metrics.jsonl`` drops the lines written after the
checkpoint, so the log of a resumed run equals an uninterrupted run's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fghash.errors import FghashError
from fghash.runs.checkpoint import load_checkpoint
from fghash.runs.config import TrainConfig, load_config
from fghash.runs.folder import CHECKPOINT, CONFIG, METRICS
from fghash.util.atomic import atomic_write_text

__all__ = ["RESUMABLE_FIELDS", "MetricsLog", "check_resume", "starting_state"]

# Options that may change when a run is resumed; everything else must match config.json.
# A new lr rescales the current (possibly decayed) learning rate by new/old.
RESUMABLE_FIELDS = frozenset(
    {
        "max_iter",
        "eval_every",
        "device",
        "num_workers",
        "data_root",
        "amp",
        "amp_dtype",
        "skip_corrupt",
        "lr",
        "nan_check_every",
        "keep_checkpoints",
    }
)


def check_resume(saved: TrainConfig, given: TrainConfig, run_dir: Path) -> TrainConfig:
    """The config a resumed run continues with: the saved one, with the given values of
    :data:`RESUMABLE_FIELDS`; any other difference is refused."""
    a, b = saved.to_dict(), given.to_dict()
    differ = sorted(k for k in a if k not in RESUMABLE_FIELDS and a[k] != b[k])
    if differ:
        raise FghashError(
            f"{run_dir} was trained with different {', '.join(differ)}; resume with the "
            f"same options (only {', '.join(sorted(RESUMABLE_FIELDS))} may change)."
        )
    return TrainConfig.from_dict({**a, **{k: b[k] for k in RESUMABLE_FIELDS}})


def starting_state(
    cfg: TrainConfig, run_dir: Path, resume: bool
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """``(config, checkpoint or None)`` a call of ``train`` starts from; refuses to resume
    a folder without a checkpoint or to start over a trained run."""
    cfg = cfg.validate()
    ckpt_path = run_dir / CHECKPOINT
    if resume:
        if not ckpt_path.is_file():
            raise FghashError(f"{run_dir} holds no checkpoint to resume; run without --resume.")
        cfg = check_resume(load_config(run_dir / CONFIG), cfg, run_dir).validate()
        return cfg, load_checkpoint(ckpt_path)
    if ckpt_path.exists():
        raise FghashError(
            f"{run_dir} already holds a trained run; pass --resume to continue it "
            "or choose another --out."
        )
    return cfg, None


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, flushed as written (rank 0 only).

    ``keep_lines``: the lines a checkpoint counted; later ones are dropped.
    """

    def __init__(self, run_dir: Path, keep_lines: int | None, enabled: bool = True) -> None:
        self.path = run_dir / METRICS
        self.enabled = enabled
        self.lines = keep_lines or 0
        if not enabled:
            return
        lines: list[str] = []
        if keep_lines is not None and self.path.exists():
            lines = self.path.read_text().splitlines()[:keep_lines]
        atomic_write_text(self.path, "".join(line + "\n" for line in lines))
        self.lines = len(lines)

    def write(self, record: dict[str, Any]) -> None:
        self.lines += 1
        if self.enabled:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
