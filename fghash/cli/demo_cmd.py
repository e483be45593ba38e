"""``fghash demo``: the whole chain on the embedded synthetic set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fghash.cli._app import CONTEXT_SETTINGS, main
from fghash.cli._options import (
    device_option,
    threads_option,
)
from fghash.cli._output import demo_summary, search_text
from fghash.util import threads as runtime

__all__ = ["demo_cmd"]


@main.command("demo", context_settings=CONTEXT_SETTINGS)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("fghash-demo"),
    show_default=True,
    help="Folder for the data, run, codes.h5 and index.",
)
@click.option("--bits", type=int, default=None, help="Code length [12].")
@device_option(("auto", "cpu", "cuda"))
@click.option(
    "--weights",
    default=None,
    help="torchvision weights for the backbone, e.g. DEFAULT (downloads) [none: random init].",
)
@click.option("--quick", is_flag=True, help="A tiny version (4 classes, 32 px, 1 iteration).")
@click.option(
    "--method",
    type=click.Choice(["a2net_efficient", "a2net"]),
    default=None,
    help="a2net: the paper's network, one layer4 pass per attention map (1.65x slower) "
    "[a2net_efficient].",
)
@click.option("--max-iter", type=int, default=None, help="Outer ADSH iterations.")
@click.option("--epochs", type=int, default=None, help="Epochs per outer iteration.")
@click.option("--num-samples", type=int, default=None, help="Images sampled per outer iteration.")
@click.option("--lr", type=float, default=None, help="Learning rate.")
@click.option("--seed", type=int, default=None, help="Seed of the data and the training.")
@threads_option()
@click.option("--force", is_flag=True, help="Train again (and regenerate changed data) in --out.")
def demo_cmd(
    out: Path, device: str, quick: bool, threads: int | None, force: bool, **overrides: Any
) -> None:
    """The whole chain on the embedded synthetic birds, no download: generate the data,
    train a small A2-Net, encode, build a FAISS index, search, and compare mAP with exact
    float search.

    Running it again in the same --out reuses the data and the trained run (an interrupted
    run resumes); other settings there need --force, which trains again.
    """
    import time

    from bench.quick import quick_report
    from fghash.demo import DemoConfig, run_demo
    from index import build_bundle, search_bundle

    runtime.set_threads(threads)
    cfg = (DemoConfig.quick() if quick else DemoConfig()).replace(**overrides)
    res = run_demo(cfg, out, device=device, force=force, step=click.echo)
    seconds = dict(res.seconds)
    bundle = out / "index"
    click.echo(f"[index] exact binary index (IndexBinaryFlat) -> {bundle}")
    t0 = time.perf_counter()
    build_bundle(
        res.codes_path,
        bundle,
        device="gpu" if device == "cuda" else device,
        overwrite=True,
    )
    seconds["index"] = time.perf_counter() - t0
    k = min(5, res.n_train)
    t0 = time.perf_counter()
    results = search_bundle(bundle, k, codes=res.codes_path, limit=3, device="cpu")
    seconds["search"] = time.perf_counter() - t0
    click.echo(f"[search] the first {len(results)} test images, top {k}:")
    click.echo(search_text(results))
    click.echo("[evaluate] mAP and speed")
    t0 = time.perf_counter()
    # one thread: a search of a few hundred codes is over before a second OpenMP thread
    # wakes (IndexBinaryFlat, 160 queries x 480 codes: 1.9M queries/s on one thread,
    # 0.14M on two with the bounded spin of fghash.util.threads)
    rep = quick_report(res.codes_path, k=min(10, res.n_train), threads=1)
    seconds["eval"] = time.perf_counter() - t0
    click.echo("")
    click.echo(demo_summary(rep, out, seconds))
    click.echo("")
    click.echo("next:")
    for line in (
        f"fghash search {bundle} --codes {res.codes_path} --limit 5 -k 10",
        f"fghash bench {res.codes_path} --out {out / 'bench'}",
        f"fghash info {res.codes_path}",
        f"fghash encode {res.run_dir} --out {out / 'codes-backbone.h5'} --features backbone",
    ):
        click.echo(f"  {line}")
