"""``fghash bench`` and ``fghash explain``: reports written to a folder."""

from __future__ import annotations

from pathlib import Path

import click

from fghash.cli._app import main
from fghash.cli._options import (
    MAX_PER_BIT,
    CommaList,
    at_most,
    command_line,
    device_option,
    force_option,
    k_option,
    out_option,
    threads_option,
    wait_option,
)
from fghash.cli._output import explain_text

__all__ = ["bench_cmd", "explain_cmd"]

_CODES = click.argument(
    "codes",
    metavar="CODES.h5 [CODES2.h5 ...]",
    nargs=-1,
    required=True,
    type=click.Path(path_type=Path),
)


@main.command("bench")
@_CODES
@out_option("Folder for report.json, report.md and plots.")
@click.option(
    "--index-types",
    type=CommaList(str, "index types", "flat,ivf"),
    default="flat,ivf,hnsw,hash,multihash",
    show_default=True,
    help="Comma-separated index types to time (flat, ivf, hnsw, hash, multihash).",
)
@k_option(
    "Comma-separated k for @k metrics, each at most the database size "
    "[default: 1,10,100, those the database can answer].",
    type=CommaList(int, "integers", "1,10,100"),
    default=None,
)
@threads_option("FAISS threads for every timing (default: FAISS's own).")
@click.option(
    "--runs",
    type=at_most(1000),
    default=5,
    show_default=True,
    help="Timed runs per configuration, after one warm-up.",
)
@click.option(
    "--latency-queries",
    type=at_most(2**20),
    default=200,
    show_default=True,
    help="Single queries timed for latency percentiles.",
)
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Per configuration: stop timing runs, and single queries, past this many seconds.",
)
@click.option(
    "--hnsw-budget",
    type=click.FloatRange(min=0, min_open=True),
    default=20.0,
    show_default=True,
    help="Seconds to build HNSW in; past them it holds only the first items (the report says "
    "how many).",
)
@click.option(
    "--oversample",
    type=CommaList(int, "integers", "2,4,10"),
    default="2,4,10",
    show_default=True,
    help="Comma-separated factors X of the re-ranked rows (files with float features): the "
    "k·X Hamming nearest re-ranked by float score.",
)
@device_option()
@force_option("Run again even if --out already holds a report.")
@wait_option("--out")
def bench_cmd(
    codes: tuple[Path, ...],
    out: Path,
    index_types: list[str],
    k: list[int] | None,
    threads: int | None,
    runs: int,
    latency_queries: int,
    max_seconds: float,
    hnsw_budget: float,
    oversample: list[int],
    device: str,
    force: bool,
    wait: float,
) -> None:
    """Benchmark codes files: mAP (tie-aware and stable), float baselines, index speed.

    Ranks each file's query split against its database split, times every index type over
    its parameter sweep, and writes report.json, report.md and PNG plots to --out.
    """
    from bench.report import run_bench

    res = run_bench(
        list(codes),
        out,
        index_types=index_types,
        ks=k,
        threads=threads,
        runs=runs,
        latency_queries=latency_queries,
        max_seconds=max_seconds,
        hnsw_budget_s=hnsw_budget,
        oversample=oversample,
        device=device,
        force=force,
        wait=wait,
        command=command_line(),
    )
    for note in res.notes:
        click.echo(f"note: {note}", err=True)
    if not res.skipped:
        for p in res.paths:
            click.echo(str(p))


@main.command("explain")
@_CODES
@out_option("Folder for the report.")
@click.option(
    "--run",
    type=click.Path(file_okay=False),
    help="Run folder: encodes relaxed values the codes file lacks; its data root is a fallback.",
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    help="Folder the codes file's image paths are relative to (default: the recorded one).",
)
@click.option(
    "--split", default="database", show_default=True, help="Split whose bits are explained."
)
@click.option("--bits-to-show", help="Bits for the per-bit grids, e.g. 0,3,5-7 [all].")
@click.option(
    "--per-bit",
    type=at_most(MAX_PER_BIT),
    default=8,
    show_default=True,
    help="Images per side in a bit's grid.",
)
@click.option(
    "--queries",
    type=CommaList(int, "ids", "3,17"),
    help="Query ids for the retrieval examples, comma-separated.",
)
@click.option(
    "--num-queries",
    type=at_most(1000),
    default=4,
    show_default=True,
    help="Random queries otherwise.",
)
@k_option("Results per query.")
@click.option(
    "--rotations",
    type=at_most(10_000),
    default=20,
    show_default=True,
    help="Random rotations in the null.",
)
@click.option(
    "--attributes-from",
    type=click.Path(dir_okay=False),
    help="Codes file whose attributes describe the same items (matched by id), e.g. for ITQ.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@device_option("cuda")
@force_option("Replace a report already in --out.")
@wait_option("--out")
def explain_cmd(
    codes: tuple[Path, ...],
    out: Path,
    run: str | None,
    data_root: str | None,
    split: str,
    bits_to_show: str | None,
    per_bit: int,
    queries: list[int] | None,
    num_queries: int,
    k: int,
    rotations: int,
    attributes_from: str | None,
    seed: int,
    device: str,
    force: bool,
    wait: float,
) -> None:
    """What the bits mean: per-bit image grids, bit-attribute AUC against a rotation null,
    bit statistics and retrieval examples, in --out (explain.md, explain.json, PNGs).

    With several codes files, their attribute-awareness scores side by side.
    """
    from fghash.ops.reports import explain_codes

    doc = explain_codes(
        codes,
        out,
        run=run,
        data_root=data_root,
        split=split,
        attributes_from=attributes_from,
        device=device,
        bits_to_show=bits_to_show,
        per_bit=per_bit,
        queries=queries,
        num_queries=num_queries,
        k=k,
        rotations=rotations,
        seed=seed,
        force=force,
        command=command_line(),
        wait=wait,
    )
    text = explain_text(doc)
    if text:
        click.echo(text)
    for s in doc["skipped"]:
        click.echo(f"skipped: {s}", err=True)
    click.echo(
        f"wrote {out / 'explain.md'}, {out / 'explain.json'} and {len(doc['figures'])} PNG(s)"
    )
