"""Section ``train_speed``: the training loop against the step ceiling of its model.

For A²-Net faithful (``a2net``) and efficient (``a2net_efficient``): images/s of the real
loop (:func:`bench.scripts.bench_train.loop_rate`: data loading, augmentation, copies,
step, bookkeeping) and of the step alone on an on-device batch
(:func:`bench.scripts.bench_train.ceiling_rate`), same model, loss and precision.
Goal on the GPU: loop ≥ :data:`GOAL` × ceiling (tiny mode records the ratio, no goal).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.gpu_checks._common import sizes, synthetic_set

__all__ = ["GOAL", "check"]

GOAL = 0.85  # loop / ceiling on one GPU (issue 19)


def check(tiny: bool, device: str) -> dict[str, Any]:
    from bench.scripts.bench_train import ceiling_rate, loop_rate
    from fghash.runs.config import resolve_config

    sz = sizes(tiny)
    steps = 2 if tiny else 20
    out: dict[str, Any] = {
        "backbone": sz.backbone,
        "image_size": sz.image_size,
        "batch_size": sz.batch_size,
        "bits": sz.bits,
        "steps": steps,
        "goal": None if tiny else GOAL,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = synthetic_set(Path(tmp) / "data", steps * sz.batch_size, sz.image_size)
        for method in ("a2net", "a2net_efficient"):
            cfg = resolve_config(
                "synthetic",
                None,
                method=method,
                data_root=str(root),
                bits=sz.bits,
                weights="none",
                backbone=sz.backbone,
                image_size=sz.image_size,
                batch_size=sz.batch_size,
                num_samples=steps * sz.batch_size,
                max_iter=2,
                epochs=2,
                lr=1e-5,  # stays finite from random weights; speed does not care
                eval_every=0,
                device=device,
                nan_check_every=steps,
            )
            loop = loop_rate(cfg, Path(tmp) / f"run-{method}")
            ceiling = ceiling_rate(cfg, steps)
            ratio = loop / ceiling
            out["models"][method] = {
                "loop_images_per_s": round(loop, 1),
                "ceiling_images_per_s": round(ceiling, 1),
                "ratio": round(ratio, 3),
                "goal_met": None if tiny else ratio >= GOAL,
            }
    return out
