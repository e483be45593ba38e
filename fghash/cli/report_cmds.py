"""``fghash bench`` and ``fghash explain``: reports written to a folder."""

from __future__ import annotations

from pathlib import Path

import click

from fghash.cli._app import UserError, main
from fghash.cli._options import (
    command_line,
    device_option,
    int_list,
)
from fghash.cli._output import table

__all__ = ["bench_cmd", "explain_cmd"]


@main.command("bench")
@click.argument(
    "codes",
    metavar="CODES.h5 [CODES2.h5 ...]",
    nargs=-1,
    required=True,
    type=click.Path(path_type=Path),
)
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for report.json, report.md and plots.",
)
@click.option(
    "--index-types",
    default="flat,ivf,hnsw,hash,multihash",
    show_default=True,
    help="Comma-separated index types to time (flat, ivf, hnsw, hash, multihash).",
)
@click.option(
    "-k",
    "--k",
    "ks",
    default=None,
    callback=int_list,
    help="Comma-separated k for @k metrics, each at most the database size "
    "[default: 1,10,100, those the database can answer].",
)
@click.option("--threads", type=int, help="FAISS threads for every timing (default: FAISS's own).")
@click.option(
    "--runs",
    type=int,
    default=5,
    show_default=True,
    help="Timed runs per configuration, after one warm-up.",
)
@click.option(
    "--latency-queries",
    type=int,
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
@device_option()
@click.option("--force", is_flag=True, help="Run again even if --out already holds a report.")
def bench_cmd(
    codes: tuple[Path, ...],
    out: Path,
    index_types: str,
    ks: list[int] | None,
    threads: int | None,
    runs: int,
    latency_queries: int,
    max_seconds: float,
    hnsw_budget: float,
    device: str,
    force: bool,
) -> None:
    """Benchmark codes files: mAP (tie-aware and stable), float baselines, index speed.

    Ranks each file's query split against its database split, times every index type over
    its parameter sweep, and writes report.json, report.md and PNG plots to --out.
    """
    from bench.report import run_bench

    res = run_bench(
        list(codes),
        out,
        index_types=[t.strip() for t in index_types.split(",") if t.strip()],
        ks=ks,
        threads=threads,
        runs=runs,
        latency_queries=latency_queries,
        max_seconds=max_seconds,
        hnsw_budget_s=hnsw_budget,
        device=device,
        force=force,
        command=" ".join(
            ["fghash bench", *map(str, codes), f"--out {out}", f"--index-types {index_types}"]
            + ([f"--k {','.join(map(str, ks))}"] if ks else [])
            + [f"--runs {runs}", f"--device {device}"]
            + [f"--latency-queries {latency_queries}", f"--max-seconds {max_seconds:g}"]
            + [f"--hnsw-budget {hnsw_budget:g}"]
            + ([f"--threads {threads}"] if threads else [])
        ),
    )
    for note in res.notes:
        click.echo(f"note: {note}", err=True)
    if not res.skipped:
        for p in res.paths:
            click.echo(str(p))


@main.command("explain")
@click.argument(
    "codes",
    metavar="CODES.h5 [CODES2.h5 ...]",
    nargs=-1,
    required=True,
    type=click.Path(path_type=Path),
)
@click.option(
    "--out", "-o", required=True, type=click.Path(path_type=Path), help="Folder for the report."
)
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
    "--per-bit", type=int, default=8, show_default=True, help="Images per side in a bit's grid."
)
@click.option("--queries", help="Query ids for the retrieval examples, comma-separated.")
@click.option(
    "--num-queries", type=int, default=4, show_default=True, help="Random queries otherwise."
)
@click.option("-k", "--k", "k", type=int, default=10, show_default=True, help="Results per query.")
@click.option(
    "--rotations", type=int, default=20, show_default=True, help="Random rotations in the null."
)
@click.option(
    "--attributes-from",
    type=click.Path(dir_okay=False),
    help="Codes file whose attributes describe the same items (matched by id), e.g. for ITQ.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@device_option(("auto", "cpu", "cuda"))
@click.option("--force", is_flag=True, help="Replace a report already in --out.")
def explain_cmd(
    codes: tuple[Path, ...],
    out: Path,
    run: str | None,
    data_root: str | None,
    split: str,
    bits_to_show: str | None,
    per_bit: int,
    queries: str | None,
    num_queries: int,
    k: int,
    rotations: int,
    attributes_from: str | None,
    seed: int,
    device: str,
    force: bool,
) -> None:
    """What the bits mean: per-bit image grids, bit-attribute AUC against a rotation null,
    bit statistics and retrieval examples, in --out (explain.md, explain.json, PNGs).

    With several codes files, their attribute-awareness scores side by side.
    """
    from bench.outdir import removing_on_failure
    from fghash.explain.compare import compare
    from fghash.explain.inputs import load_input
    from fghash.explain.run import explain, parse_bits_to_show

    explain, compare = removing_on_failure(explain, out), removing_on_failure(compare, out)

    if min(per_bit, num_queries, k, rotations) < 1:
        raise UserError("--per-bit, --num-queries, -k and --rotations must be at least 1.")
    try:
        qids = [int(q) for q in queries.split(",") if q.strip()] if queries else None
    except ValueError:
        raise UserError(f"--queries must be comma-separated ids, got {queries!r}.") from None
    inputs = [
        load_input(
            c,
            split=split,
            run=run,
            data_root=data_root,
            attributes_from=attributes_from,
            device=device,
        )
        for c in codes
    ]
    command = command_line("explain", [str(c) for c in codes])
    if len(inputs) > 1:
        doc = compare(inputs, out, rotations=rotations, seed=seed, force=force, command=command)
        rows = [("codes file", "per bit", "null", "per attribute", "null", "signs", "null")]
        for r in doc["rows"]:
            cells = []
            for a, key in ((r, "per_bit"), (r, "per_attribute"), (r.get("binary"), "per_bit")):
                if not a or key not in a:
                    cells += ["-", "-"]
                    continue
                n = a["null"]
                cells += [f"{a[key]:.3f}", f"{n[key + '_mean']:.3f}±{n[key + '_std']:.3f}"]
            rows.append((r["name"], *cells))
        click.echo("attribute awareness (mean best |AUC-0.5|; null: random rotations):")
        click.echo(table(rows, indent="  "))
    else:
        inp = inputs[0]
        doc = explain(
            inp,
            out,
            bits_to_show=parse_bits_to_show(bits_to_show, inp.cf.bits),
            per_side=per_bit,
            queries=qids,
            num_queries=num_queries,
            k=k,
            rotations=rotations,
            seed=seed,
            force=force,
            command=command,
        )
        aw = doc["awareness"]
        if "per_bit" in aw:
            n = aw["null"]
            click.echo(
                f"attribute awareness per bit {aw['per_bit']:.3f} (rotation null "
                f"{n['per_bit_mean']:.3f}±{n['per_bit_std']:.3f}), per attribute "
                f"{aw['per_attribute']:.3f} (null {n['per_attribute_mean']:.3f}"
                f"±{n['per_attribute_std']:.3f})"
            )
    for s in doc["skipped"]:
        click.echo(f"skipped: {s}", err=True)
    click.echo(
        f"wrote {out / 'explain.md'}, {out / 'explain.json'} and {len(doc['figures'])} PNG(s)"
    )
