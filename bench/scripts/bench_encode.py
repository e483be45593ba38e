"""Images per second of ``fghash encode`` against a plain PyTorch loop, side by side.

A small run is trained on the synthetic data set (a few steps: the weights do not
matter for speed); then, over the same images (test split as queries, training split
as database, ``--database encode --features none``), in one process:

* ``fghash encode``: :func:`fghash.encoding.encode.encode_run`, parts written to disk, the codes
  file assembled at the end (the whole command but start-up and the run's loading);
* ``plain loop``: a DataLoader with the same transform and workers, and the same network
  in eval mode, outputs kept in memory, nothing written;
* ``torchvision backbone``: the same loop over the bare torchvision backbone (pooled
  features), for the cost of the hashing heads.

    python -m bench.scripts.bench_encode [--images 512] [--image-size 224] [--num-workers 2]
        [--preset adsh]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _loop(model: Any, loader: Any) -> int:
    import torch

    n = 0
    with torch.no_grad():
        for images, _, _ in loader:
            model(images)
            n += len(images)
    return n


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        prog="python -m bench.scripts.bench_encode", description=__doc__.splitlines()[0]
    )
    p.add_argument("--images", type=int, default=512, help="images in all (test + train)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--preset", default="adsh", help="training preset (network) of the run")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=2)
    a = p.parse_args(argv)

    import torch
    from torch.utils.data import ConcatDataset, DataLoader

    from fghash.data import build_transform, collate_skip_none, generate_synthetic, load_dataset
    from fghash.encoding.encode import encode_run
    from fghash.runs.config import resolve_config
    from fghash.runs.folder import load_run
    from fghash.training.loop import train

    classes = 8
    per_class = max(1, a.images // classes)
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_synthetic(
            Path(tmp) / "data",
            num_classes=classes,
            train_per_class=per_class * 3 // 4,
            test_per_class=per_class - per_class * 3 // 4,
            image_size=a.image_size,
        )
        cfg = resolve_config(
            "synthetic", a.preset, data_root=str(root), backbone=a.backbone, bits=12,
            image_size=a.image_size, num_samples=8, batch_size=4, max_iter=1, epochs=1,
            device="cpu", val_fraction=0.0, weights="none",
        )  # fmt: skip
        run = Path(tmp) / "run"
        train(cfg, run, progress=False)
        cfg, state, model = load_run(run, "cpu")
        tf = build_transform(False, cfg.image_size, resize=cfg.resize)
        sets = [load_dataset("synthetic", root, split=s, transform=tf) for s in ("test", "train")]
        loader = DataLoader(
            ConcatDataset(sets),
            batch_size=a.batch_size,
            num_workers=a.num_workers,
            collate_fn=collate_skip_none,
        )
        rows: dict[str, Any] = {}
        t0 = time.perf_counter()
        encode_run(
            run, Path(tmp) / "codes.h5", database="encode", features="none", device="cpu",
            batch_size=a.batch_size, num_workers=a.num_workers, progress=False,
        )  # fmt: skip
        n_total = sum(len(s) for s in sets)
        rows["fghash encode"] = n_total / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        n = _loop(model.eval(), loader)
        rows["plain loop, same network"] = n / (time.perf_counter() - t0)
        import torchvision

        bare = getattr(torchvision.models, a.backbone)(weights=None)
        bare.fc = torch.nn.Identity()
        t0 = time.perf_counter()
        n = _loop(bare.eval(), loader)
        rows["plain loop, torchvision backbone"] = n / (time.perf_counter() - t0)
    out = {
        "images": n_total,
        "image_size": a.image_size,
        "backbone": a.backbone,
        "preset": a.preset,
        "num_workers": a.num_workers,
        "torch_threads": torch.get_num_threads(),
        "images_per_s": {k: round(v, 1) for k, v in rows.items()},
        "encode_vs_plain_loop": round(rows["fghash encode"] / rows["plain loop, same network"], 2),
        "encode_vs_torchvision": round(
            rows["fghash encode"] / rows["plain loop, torchvision backbone"], 2
        ),
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
