"""The run folder that ``fghash train`` writes and ``fghash encode`` reads.

One module owns its layout, so training and encoding never import each other, and
every file name below is a constant here (name in brackets) that others import::

    RUN/config.json                 [CONFIG] the resolved TrainConfig
    RUN/data.json                   [DATA_FILE] the data set's fingerprint
    RUN/metrics.jsonl               [METRICS] one JSON object per epoch / evaluation
    RUN/checkpoints/iter-0007.pt    [iteration_checkpoint] the state after outer iteration
                                    7 (the newest ``keep_checkpoints`` kept, older pruned)
    RUN/checkpoints/last.pt         [CHECKPOINT] the newest of them (a hard link, or a copy)
    RUN/database_codes.npy          [DATABASE_CODES] learned database codes B at the end
    RUN/database_indices.npy        [DATABASE_INDICES] their positions in the train split
    RUN/bits-12/...                 [bits_folder] one run per code length, when
                                    ``fghash train`` is given several

A checkpoint is written once per completed outer iteration (and never after a NaN), so
a run stopped anywhere resumes from the start of the iteration it was in.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from fghash.errors import FghashError
from fghash.runs.config import TrainConfig, load_config

__all__ = [
    "CHECKPOINT",
    "CHECKPOINTS",
    "CONFIG",
    "DATA_FILE",
    "DATABASE_CODES",
    "DATABASE_INDICES",
    "METRICS",
    "iteration_checkpoint",
    "bits_folder",
    "build_model",
    "save_iteration_checkpoint",
    "iteration_checkpoints",
    "load_run",
]

log = logging.getLogger(__name__)

CONFIG = "config.json"
DATA_FILE = "data.json"
METRICS = "metrics.jsonl"
DATABASE_CODES = "database_codes.npy"
DATABASE_INDICES = "database_indices.npy"
CHECKPOINTS = Path("checkpoints")
CHECKPOINT = CHECKPOINTS / "last.pt"
_ITER = re.compile(r"^iter-(\d+)\.pt$")


def iteration_checkpoint(iteration: int) -> Path:
    """The checkpoint of outer iteration ``iteration``, relative to the run folder."""
    return CHECKPOINTS / f"iter-{iteration:04d}.pt"


def bits_folder(out: str | os.PathLike[str], bits: int) -> Path:
    """The run folder of code length ``bits`` inside ``out`` when one ``fghash train``
    trains several lengths."""
    return Path(out) / f"bits-{int(bits)}"


def build_model(cfg: TrainConfig) -> Any:
    """The network a config describes (:func:`fghash.models.create_model`)."""
    from fghash.models import create_model

    kwargs: dict[str, Any] = dict(
        bits=cfg.bits,
        backbone=cfg.backbone,
        weights=cfg.weights,
        num_attention=cfg.num_attention,
        image_size=cfg.image_size,
    )
    if cfg.method.startswith("a2net"):
        kwargs.update(attention=cfg.attention, self_consistency=cfg.self_consistency)
    return create_model(cfg.method, **kwargs)


def iteration_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The per-iteration checkpoints of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _ITER.match(p.name))]
    return [p for _, p in sorted(found)]


def save_iteration_checkpoint(
    run_dir: str | os.PathLike[str], state: dict[str, Any], iteration: int, keep: int = 2
) -> Path:
    """Write ``state`` as the checkpoint of outer iteration ``iteration`` (1-based count of
    completed iterations), point ``last.pt`` at it, and prune all but the newest ``keep``.

    Each file is written atomically (temporary file, fsync, rename) and ``last.pt`` is
    swapped in by one rename, so a crash at any moment leaves a readable ``last.pt``.
    """
    from fghash.runs.checkpoint import save_checkpoint  # torch: only when training

    run_dir = Path(run_dir)
    path = save_checkpoint(run_dir / iteration_checkpoint(iteration), state)
    last = run_dir / CHECKPOINT
    tmp = last.with_name(f".{last.name}.link")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(path, tmp)
    except OSError:  # a file system without hard links
        shutil.copyfile(path, tmp)
    os.replace(tmp, last)
    for old in iteration_checkpoints(run_dir)[: -max(1, keep)]:
        old.unlink()
    return path


def load_run(
    run_dir: str | os.PathLike[str], device: Any = "cpu"
) -> tuple[TrainConfig, dict[str, Any], Any]:
    """``(config, checkpoint state, model in eval mode on device)`` of a trained run."""
    from fghash.runs.checkpoint import load_checkpoint
    from fghash.util.device import resolve_device

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FghashError(f"{run_dir}: no such run folder; train one with fghash train.")
    if not (run_dir / CONFIG).is_file() and any(run_dir.glob(f"bits-*/{CONFIG}")):
        subs = ", ".join(sorted(p.parent.name for p in run_dir.glob(f"bits-*/{CONFIG}")))
        raise FghashError(
            f"{run_dir} holds several runs ({subs}); name one of them, e.g. {run_dir}/bits-12."
        )
    cfg = load_config(run_dir / CONFIG)
    state = load_checkpoint(run_dir / CHECKPOINT)
    if not state.get("complete", False):
        log.warning(
            "%s: training stopped after %d of %d outer iterations; encoding its current state",
            run_dir,
            int(state["next_iter"]),
            cfg.max_iter,
        )
    model = build_model(TrainConfig.from_dict({**cfg.to_dict(), "weights": None}))
    model.load_state_dict(state["model"])
    model.to(resolve_device(device)).eval()
    return cfg, state, model
