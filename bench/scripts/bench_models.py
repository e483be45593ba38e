"""Cost of one training step of each network: faithful A²-Net against its cheaper variants.

Builds each model by name from the registry (random weights, nothing downloaded), then
times forward + backward of ``relaxed.sum() + ‖x − x_rec‖²`` on a random batch: one
warm-up step, then the median of ``--runs`` steps. Prints parameters, seconds per step,
images per second and the ratio to the first model (``a2net`` by default, the paper's
network with one ``layer4`` pass per attention map).

    python -m bench.scripts.bench_models [--models a2net,a2net_efficient,adsh] [--backbone resnet50]
        [--image-size 224] [--batch-size 2] [--bits 12] [--runs 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import torch

from fghash.errors import FghashError
from fghash.models import create_model
from fghash.util.device import resolve_device

__all__ = ["time_step", "main"]


def time_step(
    name: str,
    *,
    backbone: str,
    image_size: int,
    batch_size: int,
    bits: int,
    runs: int,
    device: torch.device,
    num_attention: int | None = None,
) -> dict[str, Any]:
    """Median seconds of one forward + backward step of model ``name``."""
    torch.manual_seed(0)
    model = create_model(
        name, bits=bits, backbone=backbone, image_size=image_size, num_attention=num_attention
    ).to(device)
    model.train()
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(images)
        loss = out.relaxed.sum() + (out.x - out.x_rec).pow(2).sum()
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    step()
    seconds = statistics.median(step() for _ in range(runs))
    return {
        "model": name,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "seconds": seconds,
        "images_per_s": batch_size / seconds,
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(
        prog="python -m bench.scripts.bench_models", description=__doc__.splitlines()[0]
    )
    p.add_argument("--models", default="a2net,a2net_efficient,adsh")
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--bits", type=int, default=12)
    p.add_argument("--num-attention", type=int, help="attention maps M (default: bits)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    a = p.parse_args(argv)
    if a.runs < 1 or a.batch_size < 1:
        p.error("--runs and --batch-size must be positive")
    try:
        device = resolve_device(a.device)
        rows = [
            time_step(
                name.strip(),
                backbone=a.backbone,
                image_size=a.image_size,
                batch_size=a.batch_size,
                bits=a.bits,
                runs=a.runs,
                device=device,
                num_attention=a.num_attention,
            )
            for name in a.models.split(",")
        ]
    except FghashError as e:
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(2)
    print(
        f"{a.backbone}, {a.image_size} px, batch {a.batch_size}, {a.bits} bits, device {device}, "
        f"torch threads {torch.get_num_threads()}, median of {a.runs} steps after 1 warm-up"
    )
    print(f"{'model':<18}{'params (M)':>12}{'s/step':>10}{'images/s':>10}{'vs first':>10}")
    for r in rows:
        ratio = rows[0]["seconds"] / r["seconds"]
        print(
            f"{r['model']:<18}{r['params_m']:>12.1f}{r['seconds']:>10.3f}"
            f"{r['images_per_s']:>10.2f}{ratio:>9.2f}x"
        )
    return rows


if __name__ == "__main__":
    main()
