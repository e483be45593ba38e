"""Two gloo processes on CPU (``torchrun --nproc_per_node 2``) where one process alone
meets trouble: its share of a batch is unreadable, or rank 0's validation fails. Every
process must take the same steps and stop together, in bounded time, not hang. And each
process draws its own augmentations.

Each run goes through a small driver script (written into the test's folder) that
patches the training loop where the test needs to watch or break it, then calls
``train``. A hang shows as the time limit, after which the whole process group is killed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from fghash.data import generate_synthetic, load_dataset
from fghash.training.sampling import RankBatches, derived_seed

pytestmark = pytest.mark.slow

LIMIT_S = 240

DRIVER = textwrap.dedent(
    """
    import os, sys, torch
    from fghash.training import loop
    from tests.test_train import tiny

    mode, root, out = sys.argv[1:4]
    rank = int(os.environ["RANK"])
    opts = dict(num_samples=16, val_fraction=0.0, max_iter=1)
    if mode == "augment":
        opts["train_crop"] = "random-resized"
        seen = []
        real = loop._Run._step

        def spy(self, images, pos, *args):
            seen.append(images.clone())
            return real(self, images, pos, *args)

        loop._Run._step = spy
    if mode == "validation-fails":
        opts.update(val_fraction=0.25, num_samples=8)
        if rank == 0:
            def broken(self, it, db_codes):
                raise RuntimeError("validation broke on rank 0")

            loop._Run.validate = broken
    loop.train(tiny(root, **opts), out, progress=False)
    if mode == "augment":
        torch.save(seen, os.path.join(out, f"seen-{rank}.pt"))
    """
)


def _launch(tmp_path, mode, root, out):
    """``(return code, output)`` of the driver under torchrun, or fail at the limit."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    cmd += ["2", str(script), mode, str(root), str(out)]
    log = tmp_path / f"{mode}.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=LIMIT_S)
        except subprocess.TimeoutExpired:
            _kill_tree(proc.pid)
            proc.wait()
            pytest.fail(
                f"{mode}: still running after {LIMIT_S} s (a hang)\n{log.read_text()[-3000:]}"
            )
    return proc.returncode, log.read_text()


def _kill_tree(pid):
    """Kill ``pid`` and its descendants (torchrun starts each worker in its own session)."""
    try:
        kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        kids = []
    for kid in kids:
        _kill_tree(int(kid))
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _synthetic(base):
    return generate_synthetic(
        base / "birds", num_classes=4, train_per_class=4, test_per_class=2, image_size=32, seed=0
    )


def test_each_process_draws_its_own_augmentations(tmp_path):
    """Every training image is the same picture, so two processes' augmented batches
    differ only through their random draws."""
    root = _synthetic(tmp_path)
    ds = load_dataset("synthetic", root, "train")
    for path in ds.paths[1:]:
        shutil.copyfile(root / ds.paths[0], root / path)
    rc, output = _launch(tmp_path, "augment", root, tmp_path / "run")
    assert rc == 0, output[-3000:]
    seen = [torch.load(tmp_path / "run" / f"seen-{r}.pt") for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 4  # 16 images, batch 4, 2 per process
    assert not torch.equal(seen[0][0][0], seen[0][0][1])  # the crop is random at all
    for a, b in zip(*seen, strict=True):
        assert not torch.equal(a, b)


def test_an_unreadable_share_on_one_process_finishes(tmp_path):
    """Rank 1's share of the first batch (2 of its 4 images) is unreadable: both
    processes skip that batch together and train on the other three."""
    root = _synthetic(tmp_path)
    ds = load_dataset("synthetic", root, "train")
    # the tiny config's draws: Ω = every image (16 of 16, no validation), seed 0
    batches = RankBatches(16, 4, rank=1, world=2)
    batches.seed = derived_seed(0, 0, 0)
    first = next(iter(batches))
    assert len(first) == 2
    for pos in first:
        (root / ds.paths[pos]).write_bytes(b"\x89PNG but not really")
    rc, output = _launch(tmp_path, "unreadable", root, tmp_path / "run")
    assert rc == 0, output[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").open()]
    (epoch,) = [r for r in lines if r["event"] == "epoch"]
    assert (epoch["batches"], epoch["images"], epoch["skipped"]) == (3, 12, 4)
    assert np.load(tmp_path / "run" / "database_codes.npy").shape == (16, 8)


def test_validation_failing_on_rank_0_stops_every_process(tmp_path):
    root = _synthetic(tmp_path)
    rc, output = _launch(tmp_path, "validation-fails", root, tmp_path / "run")
    assert rc != 0
    assert "validation broke on rank 0" in output
    assert "process 0 stopped" in output  # rank 1 was told, not left waiting
