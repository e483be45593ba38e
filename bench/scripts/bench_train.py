"""Training throughput: the real ``fghash train`` loop against the step ceiling of its model.

For each model and code length, in one run:

* **loop** — images/s of :func:`fghash.training.loop.train` itself (data loading from PNG files,
  augmentation, collation, host→device copies, forward, loss, backward, SGD step, U and
  B bookkeeping) on a generated synthetic set: 2 outer iterations of 2 epochs over
  ``--steps × --batch-size`` sampled images; the figure is the last epoch's (workers and
  cuDNN already warm), from the history :func:`fghash.training.loop.train` returns;
* **ceiling** — images/s of forward + loss + backward + SGD step of the same model and loss
  under the same autocast setting on one batch already on the device, repeated
  ``--steps`` times after a warm-up (the GPU synchronised before the clock stops).

``loop / ceiling`` near 1 means the loop feeds the device as fast as it can compute;
the target on a GPU is at least 0.8. On a CPU both numbers come from the same cores
(data loading competes with the step), so the ratio says little there.

    python -m bench.scripts.bench_train [--models a2net,a2net_efficient] [--bits 12,48]
        [--backbone resnet50] [--image-size 224] [--batch-size 16] [--steps 20]
        [--device auto] [--no-amp] [--num-workers N] [--out DIR]

A small CPU run: ``--backbone resnet18 --image-size 64 --steps 4``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fghash.codes import parse_bits
from fghash.errors import FghashError
from fghash.runs.config import resolve_config
from fghash.util.device import resolve_device

__all__ = ["loop_rate", "ceiling_rate", "main"]


def _config(method: str, bits: int, root: Path, a: argparse.Namespace, device: str) -> Any:
    return resolve_config(
        "synthetic",
        None,
        method=method,
        data_root=str(root),
        bits=bits,
        weights="none",
        backbone=a.backbone,
        image_size=a.image_size,
        batch_size=a.batch_size,
        num_samples=a.steps * a.batch_size,
        max_iter=2,
        epochs=2,
        lr=1e-5,  # small enough to stay finite from random weights; speed does not care
        eval_every=0,
        device=device,
        amp=a.amp,
        num_workers=a.num_workers,
        nan_check_every=max(a.steps, 1),
    )


def loop_rate(cfg: Any, run_dir: Path) -> float:
    """Images/s of the last epoch of a real :func:`fghash.training.loop.train` run."""
    from fghash.training.loop import train

    res = train(cfg, run_dir, progress=False)
    last = res.history[-1]
    return float(last["images"]) / float(last["seconds"])


def ceiling_rate(cfg: Any, steps: int) -> float:
    """Images/s of the training step alone on one on-device batch (same model, loss, AMP)."""
    from fghash.encoding.loop import amp_dtype
    from fghash.runs.folder import build_model
    from fghash.training.step import build_loss, float_output, make_sgd

    device = resolve_device(cfg.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    loss_fn = build_loss(cfg).to(device)
    if cuda:
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    opt = make_sgd(model.parameters(), cfg)  # the optimizer fghash.training.loop builds
    n, N, k = cfg.batch_size, cfg.num_samples, cfg.bits
    images = torch.randn(n, 3, cfg.image_size, cfg.image_size, device=device)
    if cuda:
        images = images.contiguous(memory_format=torch.channels_last)
    B = torch.where(torch.randn(N, k, device=device) >= 0, 1.0, -1.0)
    S = (torch.arange(n, device=device)[:, None] % 4 == torch.arange(N, device=device) % 4).float()
    rows = torch.arange(n, device=device)
    dtype = amp_dtype(cfg, device)
    use_amp = cfg.amp and cuda
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and dtype == torch.float16)

    def step() -> None:
        with torch.autocast("cuda", dtype=dtype, enabled=use_amp):
            out = model(images)
        out = float_output(out)
        total, _ = loss_fn(out, images, S, B, B[rows])
        opt.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(opt)
        scaler.update()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    sync()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        times.append(time.perf_counter() - t0)
    return n * steps / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.scripts.bench_train", description=__doc__.split("\n")[0]
    )
    p.add_argument("--models", default="a2net,a2net_efficient")
    p.add_argument("--bits", default="12,48")
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=20, help="SGD steps per epoch and per timing")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-amp", dest="amp", action="store_false", help="float32 on CUDA too")
    p.add_argument("--num-workers", type=int, default=None, help="[0 on CPU, auto on CUDA]")
    p.add_argument("--out", type=Path, default=None, help="folder for data, runs, results.json")
    a = p.parse_args(argv)
    try:
        return _run(a)
    except FghashError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2


def _run(a: argparse.Namespace) -> int:
    from fghash.data import generate_synthetic

    if a.steps < 1 or a.batch_size < 1:
        raise FghashError("--steps and --batch-size must be positive.")
    bits = parse_bits(a.bits)
    device = resolve_device(a.device)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        out = a.out or Path(tmp)
        per_class = -(-a.steps * a.batch_size // 8)
        root = generate_synthetic(
            out / "data", num_classes=8, train_per_class=per_class, test_per_class=1,
            image_size=max(a.image_size * 8 // 7, a.image_size), seed=0,
        )  # fmt: skip
        rows = []
        for method in a.models.split(","):
            for b in bits:
                cfg = _config(method, b, root, a, device.type)
                run_dir = out / "runs" / f"{method}-{b}"
                if run_dir.exists():
                    raise FghashError(f"{run_dir} exists; choose another --out.")
                loop = loop_rate(cfg, run_dir)
                ceiling = ceiling_rate(cfg, a.steps)
                rows.append(dict(model=method, bits=b, loop=loop, ceiling=ceiling))
                print(
                    f"{method:16s} {b:3d} bits  loop {loop:8.1f} img/s  "
                    f"ceiling {ceiling:8.1f} img/s  loop/ceiling {loop / ceiling:5.2f}",
                    flush=True,
                )
        info = dict(
            device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            backbone=a.backbone, image_size=a.image_size, batch_size=a.batch_size,
            steps=a.steps, amp=bool(a.amp and device.type == "cuda"),
            threads=torch.get_num_threads(), results=rows,
        )  # fmt: skip
        if a.out is not None:
            (out / "results.json").write_text(json.dumps(info, indent=2) + "\n")
        print(json.dumps({k: v for k, v in info.items() if k != "results"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
