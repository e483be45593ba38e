"""``fghash train``: a training run from the command line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from fghash.cli._app import CONTEXT_SETTINGS, main
from fghash.cli._options import (
    CommaList,
    LazyChoice,
    device_option,
    flag_option,
    out_option,
    threads_option,
    wait_option,
)
from fghash.util import threads as runtime

__all__ = ["train_cmd"]


def _dataset_names() -> list[str]:
    from fghash.data import list_datasets

    return list_datasets()


def _config_names(name: str) -> Callable[[], list[str]]:
    """The names of one of :mod:`fghash.runs.config`'s tables, read on first use (the
    module imports numpy, which ``fghash --help`` should not wait for)."""

    def names() -> list[str]:
        from fghash.runs import config

        return list(getattr(config, name))

    return names


@main.command("train", context_settings=CONTEXT_SETTINGS)
@click.option(
    "--dataset",
    required=True,
    type=LazyChoice(_dataset_names),
    help="Data set name (layouts in docs/datasets.md).",
)
@click.option(
    "--data-root",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder holding the data set.",
)
@out_option("Run folder to write.", type=click.Path(file_okay=False))
@click.option(
    "--bits",
    default="12",
    show_default=True,
    help="Code length(s), comma-separated; several give RUN/bits-K subfolders.",
)
@click.option(
    "--preset",
    type=LazyChoice(_config_names("PRESETS")),
    default=None,
    help="Table-2 ablation row: adsh, +attention, +reconstruction, +decorrelation (= a2net), "
    "+self-consistency (journal).",
)
@click.option(
    "--protocol",
    type=LazyChoice(_config_names("PROTOCOLS")),
    default=None,
    help="Every default at once: paper (the paper's values, the reference code's where it is "
    "silent) or reference (the authors' code throughout). Other options override it. "
    "[default: paper]",
)
@click.option(
    "--method",
    type=LazyChoice(_config_names("METHODS")),
    default=None,
    help="Network and loss: a2net (the paper), a2net_efficient (one shared layer4), adsh "
    "(no attention), dpsh or hashnet (deep baselines) [default: a2net].",
)
@click.option("--backbone", default=None, help="torchvision backbone [default: resnet50].")
@click.option(
    "--weights",
    default=None,
    help="Initial backbone weights: a torchvision name (IMAGENET1K_V1), a local state-dict "
    "file, or none for random initialisation. [default: IMAGENET1K_V1, downloaded once by "
    "torchvision]",
)
@click.option(
    "--num-attention",
    type=click.IntRange(max=4096),
    default=None,
    help="Attention maps [default: bits].",
)
@click.option(
    "--image-size", type=click.IntRange(max=4096), default=None, help="Crop size [default: 224]."
)
@click.option(
    "--resize",
    type=click.IntRange(max=8192),
    default=None,
    help="Shorter side before cropping [image size x 8/7].",
)
@click.option(
    "--train-crop",
    type=LazyChoice(_config_names("TRAIN_CROPS")),
    default=None,
    help="Training crop: RandomResizedCrop, or resize then RandomCrop [random-resized].",
)
@click.option("--batch-size", type=click.IntRange(max=65536), default=None, help="[default: 16]")
@click.option(
    "--max-iter",
    type=click.IntRange(max=10**6),
    default=None,
    help="Outer ADSH iterations [paper: 60; 70 for food101, nabirds, vegfru].",
)
@click.option(
    "--epochs",
    type=click.IntRange(max=10**6),
    default=None,
    help="Epochs per outer iteration [paper: 20].",
)
@click.option(
    "--num-samples",
    type=click.IntRange(max=10**9),
    default=None,
    help="Images sampled per outer iteration [2000; 4000 for nabirds and vegfru].",
)
@click.option(
    "--lr", type=float, default=None, help="Learning rate [2.5e-4; 5e-4 nabirds, vegfru]."
)
@click.option("--momentum", type=float, default=None, help="SGD momentum [0.91].")
@flag_option("nesterov", "Nesterov momentum [on].")
@click.option("--weight-decay", type=float, default=None, help="[default: 1e-4]")
@click.option(
    "--lr-milestones",
    type=CommaList(int, "outer iterations", "25,35"),
    default=None,
    help="Outer iterations where lr drops x0.1, e.g. 50 [paper: 50; 60 for the large sets].",
)
@click.option("--gamma", type=float, default=None, help="ADSH quantization weight [200].")
@click.option(
    "--lam", type=float, default=None, help="Encoder term in the reconstruction [paper 1, ref 0]."
)
@click.option("--alpha", type=float, default=None, help="Decorrelation weight [1/(n k)].")
@click.option("--beta", type=float, default=None, help="Asymmetric/quantization scale [12/k].")
@click.option("--image-weight", type=float, default=None, help="Self-consistency weight [0.01].")
@click.option(
    "--image-weight-finetune",
    type=float,
    default=None,
    help="Self-consistency weight from --aux-start-iter on [0.1].",
)
@click.option(
    "--aux-start-iter",
    type=int,
    default=None,
    help="Outer iteration where the fine-tune stage starts: reconstruction and "
    "decorrelation terms on, image weight raised [paper 0 (+self-consistency: the lr "
    "milestone), reference max-iter/2].",
)
@click.option(
    "--init-codes",
    type=click.Choice(["random", "class"]),
    default=None,
    help="Start of the database codes B: random (ADSH) or class (one Hadamard code per "
    "class, from the training labels) [random; the demo: class].",
)
@click.option(
    "--hold-codes",
    type=click.IntRange(min=0, max=10**6),
    default=None,
    help="First outer iterations that keep B as initialised (no discrete update) [0].",
)
@flag_option("soft-similarity", "Reference code's soft targets for dissimilar pairs [on].")
@flag_option("attention", "A2-Net attention branch.")
@flag_option("reconstruction", "A2-Net reconstruction loss.")
@flag_option("decorrelation", "A2-Net decorrelation loss.")
@flag_option("self-consistency", "Journal extension: self-consistency loss.")
@flag_option("quantization", "ADSH quantization term.")
@flag_option("amp", "Mixed precision on CUDA [default: on].")
@click.option(
    "--val-fraction",
    type=float,
    default=None,
    help="Share of the train split held out for val mAP [0].",
)
@click.option(
    "--eval-every",
    type=click.IntRange(max=10**6),
    default=None,
    help="Outer iterations between val mAPs.",
)
@click.option(
    "--num-workers",
    type=click.IntRange(max=1024),
    default=None,
    help="DataLoader workers [0 on CPU, auto on CUDA].",
)
@click.option(
    "--nan-check-every",
    type=click.IntRange(max=10**9),
    default=None,
    help="SGD steps between NaN checks [50].",
)
@click.option(
    "--keep-checkpoints",
    type=click.IntRange(max=10**6),
    default=None,
    help="Per-iteration checkpoints kept [2].",
)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None, help="Random seed [0].")
@device_option("cuda")
@threads_option()
@click.option("--resume", is_flag=True, help="Continue the run(s) in --out exactly.")
@wait_option("--out")
def train_cmd(
    dataset: str,
    data_root: str,
    out: str,
    bits: str,
    preset: str | None,
    resume: bool,
    wait: float,
    lr_milestones: list[int] | None,
    threads: int | None,
    **options: Any,
) -> None:
    """Train A2-Net (or an ablation / baseline) with the ADSH protocol into a run folder.

    The defaults are the paper's protocol (--protocol paper) with ImageNet weights;
    config.json in the run folder records every resolved value. Under torchrun
    (torchrun --nproc_per_node N -m fghash train ...) the processes train one run together.
    """
    from fghash.ops.learning import train_runs

    runtime.set_threads(threads)
    if lr_milestones is not None:
        options["lr_milestones"] = tuple(lr_milestones)
    runs = train_runs(
        dataset,
        preset,
        data_root=data_root,
        bits=bits,
        out=out,
        resume=resume,
        wait=wait,
        **options,
    )
    for r in runs:
        vm = "" if r.val_map is None else f", val mAP {r.val_map:.4f}"
        click.echo(
            f"{r.config.bits} bits: {r.run_dir} ({r.iterations} outer "
            f"iteration{'' if r.iterations == 1 else 's'}, "
            f"{len(r.database_codes)} database codes{vm})"
        )
