"""``fghash encode`` and ``fghash baseline``: codes files from a run or from features."""

from __future__ import annotations

import click

from fghash.cli._app import CONTEXT_SETTINGS, main
from fghash.cli._options import (
    LazyChoice,
    device_option,
    echo_json,
    force_option,
    format_option,
    out_option,
    threads_option,
    wait_option,
)
from fghash.util import threads as runtime

__all__ = ["baseline_cmd", "encode_cmd"]


@main.command("encode", context_settings=CONTEXT_SETTINGS)
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@out_option("Codes file to write (HDF5).", type=click.Path(dir_okay=False))
@click.option(
    "--database",
    type=click.Choice(["learned", "encode"]),
    default="learned",
    show_default=True,
    help="Learned codes B (paper protocol) or network codes.",
)
@click.option(
    "--features",
    type=click.Choice(["relaxed", "backbone", "none"]),
    default="relaxed",
    show_default=True,
    help="Float features stored per item.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--num-workers",
    type=click.IntRange(min=0),
    default=None,
    help="DataLoader processes decoding and transforming images (default: on a GPU every "
    "core but one, on the CPU the cores, at most 4; 0: in the main process).",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=8192,
    show_default=True,
    help="Images per part written to disk (rounded up to whole batches).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an encode that was interrupted, from the parts it wrote.",
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Data set folder, when it moved since training.",
)
@device_option("cuda")
@threads_option()
@force_option("Replace --out if it exists.")
@wait_option("--out")
def encode_cmd(
    run_dir: str,
    out: str,
    database: str,
    features: str,
    batch_size: int,
    num_workers: int | None,
    chunk_size: int,
    resume: bool,
    data_root: str | None,
    device: str,
    threads: int | None,
    force: bool,
    wait: float,
) -> None:
    """Encode a trained run's test (query) and training (database) splits to a codes file.

    Network outputs go to disk in parts as they are computed (.OUT.parts beside --out);
    the codes file appears under its name only when complete. After an interruption,
    the same command with --resume continues from the parts already written.
    """
    from fghash.ops.learning import encode

    runtime.set_threads(threads)
    done = encode(
        run_dir,
        out,
        database=database,
        features=features,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        data_root=data_root,
        force=force,
        resume=resume,
        chunk_size=chunk_size,
        wait=wait,
    )
    sizes = ", ".join(f"{name} {n}" for name, n in done.sizes.items())
    note = f"; skipped {done.skipped} unreadable image(s)" if done.skipped else ""
    click.echo(f"wrote {done.path}: {done.bits} bits, {sizes}{note}")


def _baseline_methods() -> list[str]:
    from fghash.baselines import list_baselines

    return list_baselines()


@main.command("baseline")
@click.argument("method", type=LazyChoice(_baseline_methods, case_sensitive=False))
@click.option(
    "--features",
    "features_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="HDF5 file with /database (and /query) features: a codes file or a features file.",
)
@click.option(
    "--bits",
    default="12,24,32,48",
    show_default=True,
    help="Code lengths, comma-separated; one codes file per length.",
)
@out_option(
    "Output codes file; with several --bits, codes.h5 becomes codes-12.h5, codes-24.h5, ...",
    dest="out_path",
    type=click.Path(dir_okay=False),
)
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@force_option("Replace existing output files.")
@wait_option("the output files")
@format_option("table", "jsonl")
def baseline_cmd(
    method: str,
    features_path: str,
    bits: str,
    out_path: str,
    seed: int,
    force: bool,
    wait: float,
    fmt: str,
) -> None:
    """Fit a shallow hashing baseline (METHOD) on the database features and write codes files.

    The database split is the training split (ADSH protocol); database and query are
    both encoded. The codes files work with build-index, search and bench unchanged.
    """
    from fghash.baselines.run import parse_bits, run_baseline

    bits_list = parse_bits(bits)
    paths = run_baseline(
        method.lower(), features_path, bits_list, out_path, seed=seed, overwrite=force, wait=wait
    )
    for b, p in zip(bits_list, paths, strict=True):
        if fmt == "jsonl":
            echo_json({"method": method.lower(), "bits": b, "path": str(p)})
        else:
            click.echo(f"{method.lower()} {b:>4} bits -> {p}")
