"""``fghash demo``: the whole chain on the embedded synthetic set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fghash.cli._app import CONTEXT_SETTINGS, main
from fghash.cli._options import device_option, force_option, out_option, threads_option
from fghash.cli._output import demo_summary
from fghash.util import threads as runtime

__all__ = ["demo_cmd"]


@main.command("demo", context_settings=CONTEXT_SETTINGS)
@out_option(
    "Folder for the data, run, codes.h5 and index.",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("fghash-demo"),
    show_default=True,
)
@click.option("--bits", type=click.IntRange(max=4096), default=None, help="Code length [12].")
@device_option("cuda")
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
    help="a2net: the paper's network, one layer4 pass per attention map (slower) "
    "[a2net_efficient].",
)
@click.option(
    "--max-iter", type=click.IntRange(max=10**6), default=None, help="Outer ADSH iterations."
)
@click.option(
    "--epochs", type=click.IntRange(max=10**6), default=None, help="Epochs per outer iteration."
)
@click.option(
    "--num-samples",
    type=click.IntRange(max=10**9),
    default=None,
    help="Images sampled per outer iteration.",
)
@click.option("--lr", type=float, default=None, help="Learning rate.")
@click.option(
    "--seed",
    type=click.IntRange(0, 2**32 - 1),
    default=None,
    help="Seed of the data and the training.",
)
@threads_option()
@force_option("Train again (and regenerate changed data) in --out.")
def demo_cmd(
    out: Path, device: str, quick: bool, threads: int | None, force: bool, **overrides: Any
) -> None:
    """The whole chain on the embedded synthetic birds, no download: generate the data,
    train a small A2-Net, encode, build a FAISS index, search, and compare mAP with exact
    float search.

    Running it again in the same --out reuses the data and the trained run (an interrupted
    run resumes); other settings there need --force, which trains again.
    """
    from fghash.demo import DemoConfig, demo

    runtime.set_threads(threads)
    cfg = (DemoConfig.quick() if quick else DemoConfig()).replace(**overrides)
    report = demo(cfg, out, device=device, force=force, step=click.echo)
    click.echo("")
    click.echo(demo_summary(report))
