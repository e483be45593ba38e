"""Section ``encode_speed``: ``fghash encode`` against the bare backbone's forward.

A run is trained for a few steps (its weights do not matter for speed), then
:func:`fghash.encoding.encode.encode_run` encodes its test and training images from PNG
files (``--database encode --features none``: decoding, transforms, copies, network,
codes file). The ceiling is the bare torchvision backbone's forward on one batch already
on the device, in the precision and memory format encoding uses on that device. Goal on
the GPU: encode ≥ :data:`GOAL` × the bare forward.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.gpu_checks._common import sizes, sync, synthetic_set

__all__ = ["GOAL", "bare_forward_rate", "check"]

GOAL = 0.8  # encode / bare backbone forward on one GPU (issue 19)


def bare_forward_rate(backbone: str, image_size: int, batch: int, device: str, reps: int) -> float:
    """Images/s of the torchvision backbone (pooled features, no head) on an on-device
    batch: bfloat16 autocast and channels-last on CUDA, float32 on the CPU."""
    import torch
    import torchvision

    cuda = device.startswith("cuda")
    net = getattr(torchvision.models, backbone)(weights=None)
    net.fc = torch.nn.Identity()
    net = net.eval().to(device)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    if cuda:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def forward() -> None:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            net(x)

    for _ in range(2):
        forward()
    sync(device)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            forward()
        sync(device)
        times.append(time.perf_counter() - t0)
    return batch * reps / statistics.median(times)


def check(tiny: bool, device: str) -> dict[str, Any]:
    from fghash.encoding.encode import encode_run
    from fghash.runs.config import resolve_config
    from fghash.training.loop import train

    sz = sizes(tiny)
    images, batch = (48, 8) if tiny else (2048, 128)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        root = synthetic_set(tmp_path / "data", images * 4 // 5, sz.image_size)
        cfg = resolve_config(
            "synthetic",
            None,
            data_root=str(root),
            weights="none",
            backbone=sz.backbone,
            image_size=sz.image_size,
            bits=sz.bits,
            batch_size=sz.batch_size,
            num_samples=sz.batch_size,
            max_iter=1,
            epochs=1,
            eval_every=0,
            device=device,
        )
        train(cfg, tmp_path / "run", progress=False)
        out = tmp_path / "codes.h5"
        kwargs = dict(database="encode", features="none", device=device, batch_size=batch)
        if not tiny:  # workers, cuDNN's autotuning and the page cache warm
            encode_run(tmp_path / "run", tmp_path / "warm.h5", progress=False, **kwargs)
        t0 = time.perf_counter()
        encode_run(tmp_path / "run", out, progress=False, **kwargs)
        seconds = time.perf_counter() - t0
        import h5py

        with h5py.File(out) as f:
            n = sum(len(f[s]["codes"]) for s in ("query", "database"))
    encode = n / seconds
    bare = bare_forward_rate(sz.backbone, sz.image_size, batch, device, reps=max(1, n // batch))
    return {
        "backbone": sz.backbone,
        "image_size": sz.image_size,
        "images": n,
        "batch_size": batch,
        "encode_images_per_s": round(encode, 1),
        "bare_forward_images_per_s": round(bare, 1),
        "ratio": round(encode / bare, 3),
        "goal": None if tiny else GOAL,
        "goal_met": None if tiny else encode / bare >= GOAL,
    }
