"""``fghash search``: an index bundle searched by codes, a hex code or images."""

from __future__ import annotations

from pathlib import Path

import click

from fghash.cli._app import UserError, main
from fghash.cli._options import (
    device_option,
    echo_json,
    format_option,
)
from fghash.cli._output import search_text

__all__ = ["search_cmd"]


@main.command("search")
@click.argument("index_path", metavar="PATH", type=click.Path(path_type=Path))
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
@click.option(
    "-k", "--k", "k", type=int, default=10, show_default=True, help="Neighbours per query."
)
@click.option("--nprobe", type=int, help="ivf: lists to visit.")
@click.option("--ef-search", type=int, help="hnsw: search beam width.")
@click.option("--nflip", type=int, help="hash/multihash: bit flips explored per bucket.")
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
    help="Query image (repeatable), encoded by the index's run; imports torch.",
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
    device: str,
    engine: str,
    fmt: str,
) -> None:
    """Search the index bundle at PATH with queries from --codes, one --code or --image files.

    Prints a table per query, or with --format jsonl one JSON object per query:
    {"query": {"id", "label", "path"}, "results": [{"rank", "id", "distance", "label",
    "path"}, ...]}. Multi-hot labels are lists of label indices.
    """
    from index import search_bundle

    if (grid or run or data_root) and not images:
        raise UserError("--run, --grid and --data-root go with --image.")
    xq = run_dir = None
    if images:
        from fghash.encoding.image_query import encode_query_images, query_run
        from index import read_bundle_meta

        meta = read_bundle_meta(index_path)
        run_dir = query_run(run, meta, index_path)
        if grid is not None and not grid.parent.is_dir():
            raise UserError(f"--grid {grid}: the folder {grid.parent} does not exist.")
        torch_device = {"gpu": "cuda"}.get(device, device)
        xq = encode_query_images(images, run_dir, int(meta["bits"]), torch_device)
    results = search_bundle(
        index_path,
        k,
        codes=codes,
        split=split,
        limit=limit,
        code=code_hex,
        nprobe=nprobe,
        ef_search=ef_search,
        nflip=nflip,
        device=device,
        engine=engine,
        verify=True if verify else None,
        xq=xq,
        query_paths=[str(p) for p in images] if images else None,
    )
    if fmt == "jsonl":
        for r in results:
            echo_json(r)
    else:
        click.echo(search_text(results))
    if grid is not None and run_dir is not None:
        from fghash.viz.search_grid import write_search_grid

        path, missing = write_search_grid(results, grid, run_dir, data_root)
        if missing:
            click.echo(f"note: {missing} image(s) could not be read (grey squares)", err=True)
        click.echo(f"wrote {path}", err=True)
