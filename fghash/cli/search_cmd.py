"""``fghash search``: an index bundle searched by codes, a hex code or images."""

from __future__ import annotations

from pathlib import Path

import click

from fghash.cli._app import main
from fghash.cli._options import (
    MAX_EF_SEARCH,
    MAX_NFLIP,
    MAX_NPROBE,
    at_most,
    device_option,
    echo_json,
    force_option,
    format_option,
    k_option,
)
from fghash.cli._output import search_text

__all__ = ["search_cmd"]


@main.command("search")
@click.argument("index_path", metavar="PATH", type=click.Path(path_type=Path))
@click.argument(
    "more_images",
    metavar="[IMAGE]...",
    nargs=-1,
    type=click.Path(dir_okay=False, path_type=Path),
)
@click.option("--codes", type=click.Path(path_type=Path), help="Codes file holding the queries.")
@click.option(
    "--split", default="query", show_default=True, help="Split of --codes to search with."
)
@click.option("--limit", type=int, help="Only the first N queries of --codes.")
@click.option(
    "--code",
    "code_hex",
    metavar="HEX",
    help="One query code in hex, byte 0 first, two digits per byte (a leading 0x is allowed).",
)
@k_option("Neighbours per query.")
@click.option("--nprobe", type=at_most(MAX_NPROBE), help="ivf: lists to visit.")
@click.option("--ef-search", type=at_most(MAX_EF_SEARCH), help="hnsw: search beam width.")
@click.option(
    "--nflip",
    type=at_most(MAX_NFLIP),
    help="hash/multihash: bit flips explored per bucket (at most the index's hash_b).",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Compare the SHA-256 of index.faiss with index.json first, whatever its size.",
)
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Query image, encoded by the index's run (imports torch); repeatable, and the "
    "images after PATH join them, so --image *.jpg works.",
)
@click.option(
    "--run",
    type=click.Path(file_okay=False),
    help="Run folder to encode --image with [default: the run the index records].",
)
@click.option(
    "--grid",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --image: PNG of each query beside its results.",
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    help="With --grid: folder the indexed paths are relative to [default: the run's].",
)
@force_option("With --grid: replace the PNG if it exists.")
@device_option()
@click.option(
    "--engine",
    type=click.Choice(["auto", "faiss", "tensor"]),
    default="auto",
    show_default=True,
    help="faiss: FAISS's index; tensor: exact search with torch (flat bundles; on a CPU "
    "only to check results); auto: FAISS, or on --device gpu the tensor engine where "
    "FAISS cannot serve the search.",
)
@format_option("table", "jsonl")
def search_cmd(
    index_path: Path,
    more_images: tuple[Path, ...],
    codes: Path | None,
    split: str,
    limit: int | None,
    code_hex: str | None,
    k: int,
    nprobe: int | None,
    ef_search: int | None,
    nflip: int | None,
    verify: bool,
    images: tuple[Path, ...],
    run: str | None,
    grid: Path | None,
    data_root: str | None,
    force: bool,
    device: str,
    engine: str,
    fmt: str,
) -> None:
    """Search the index bundle at PATH with queries from --codes, one --code, or images.

    Images are the --image files and the IMAGE arguments after PATH (so both
    `--image a.jpg --image b.jpg` and a shell glob `--image *.jpg` work; --image files come
    first). Prints a table per query, or with --format jsonl one JSON object per query:
    {"query": {"id", "label", "path"}, "results": [{"rank", "id", "distance", "label",
    "path"}, ...]}. Multi-hot labels are lists of label indices.
    """
    from fghash.ops.indexes import search

    found = search(
        index_path,
        k,
        images=images + more_images,
        run=run,
        grid=grid,
        data_root=data_root,
        device=device,
        force=force,
        codes=codes,
        split=split,
        limit=limit,
        code=code_hex,
        nprobe=nprobe,
        ef_search=ef_search,
        nflip=nflip,
        engine=engine,
        verify=True if verify else None,
    )
    if fmt == "jsonl":
        for r in found.results:
            echo_json(r)
    else:
        click.echo(search_text(found.results))
    if found.grid is not None:
        if found.missing:
            click.echo(f"note: {found.missing} image(s) could not be read (grey squares)", err=True)
        click.echo(f"wrote {found.grid}", err=True)
