"""``fghash tune``: choose the index kind and its parameters by measuring them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fghash.cli._app import main
from fghash.cli._options import echo_json, force_option, format_option, k_option

__all__ = ["tune_cmd"]


def _bytes(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    from fghash.errors import FghashError
    from fghash.ops.tune import parse_bytes

    try:
        return parse_bytes(value)
    except FghashError as e:
        raise click.BadParameter(str(e)) from None


@main.command("tune")
@click.argument("codes", metavar="CODES.h5", type=click.Path(path_type=Path))
@click.option("--split", default="database", show_default=True, help="Split to index.")
@click.option(
    "--max-memory",
    callback=_bytes,
    metavar="SIZE",
    help="Largest index for the whole split (2GB, 500MB, 1GiB) [no limit].",
)
@click.option(
    "--min-recall",
    type=click.FloatRange(0, 1),
    default=0.95,
    show_default=True,
    help="Least tie-aware recall@k against exact search.",
)
@k_option("Neighbours per query the recall counts.", type=click.IntRange(1, 100_000))
@click.option(
    "--max-ms",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Most milliseconds per query on one thread.",
)
@click.option(
    "--queries",
    type=click.IntRange(1, 100_000),
    default=500,
    show_default=True,
    help="Tuning queries, and as many held-out ones (the file's query split, else "
    "database rows left out).",
)
@click.option(
    "--sample",
    type=click.IntRange(100, 2**40),
    default=1_000_000,
    show_default=True,
    help="Measure on at most this many database items.",
)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option(
    "--time-budget",
    type=click.FloatRange(min=0, min_open=True),
    default=150.0,
    show_default=True,
    help="Seconds of measuring; grids stop growing when they are spent.",
)
@click.option(
    "--build", type=click.Path(path_type=Path), help="Build the chosen index bundle here."
)
@click.option(
    "--out", "-o", type=click.Path(path_type=Path), help="Folder for tune.md, tune.json, tune.png."
)
@format_option("table", "json")
@force_option("Replace an existing bundle at --build.")
def tune_cmd(codes: Path, fmt: str, **kw: Any) -> None:
    """Measure flat, ivf, hnsw, hash and multihash indexes (and a GPU's) on CODES.h5 and
    choose the one that needs the fewest bytes while meeting --min-recall, --max-memory
    and --max-ms; print the Pareto front and the fghash build-index command (or, with
    --build, run it)."""
    from fghash.ops.tune import run_tune

    done = run_tune(codes, **kw)
    r = done.result
    if fmt == "json":
        echo_json(
            {
                **r.as_dict(),
                "build_command": done.build_command,
                "built": str(done.built) if done.built else None,
            }
        )
        return
    click.echo(
        f"measured {len(r.points)} configurations on {r.sample} of {r.n} codes ({r.bits} bits), "
        f"{r.queries[0]} tuning + {r.queries[1]} held-out queries, in {r.elapsed_s:.1f} s"
    )
    click.echo(done.table)
    for note in r.notes:
        click.echo(f"note: {note}")
    h = r.heldout
    click.echo(
        f"pick: {r.pick.label}; held-out queries: recall@{r.constraints.k} {h['recall']:.4f}, "
        f"{h['ms']:.4g} ms/query"
    )
    click.echo(f"why: {r.why}")
    click.echo(f"build: {done.build_command}")
    if done.search_options:
        where = done.built or "INDEX"
        click.echo(f"search with: fghash search {where} {done.search_options} ...")
    for path in done.written:
        click.echo(f"wrote {path}")
    if done.built is not None:
        click.echo(f"built {done.built}")
