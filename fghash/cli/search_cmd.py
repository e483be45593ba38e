"""``fghash search``: an index bundle searched by codes, a hex code or images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    radius_kwargs,
    radius_options,
)
from fghash.cli._output import search_text
from fghash.cli._rerank import rerank_options

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
@radius_options()
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
@rerank_options()
@click.option(
    "--server",
    metavar="URL",
    help="Ask the `fghash serve` at URL instead (PATH is then the index's name there); "
    "--codes is read here and its codes sent, images are encoded by the server.",
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
    radius: int | None,
    max_results: int | None,
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
    rerank: str | None,
    oversample: int,
    rerank_metric: str,
    server: str | None,
    fmt: str,
) -> None:
    """Search the index bundle at PATH with queries from --codes, one --code, or images.

    Images are the --image files and the IMAGE arguments after PATH (so both
    `--image a.jpg --image b.jpg` and a shell glob `--image *.jpg` work; --image files come
    first). Prints a table per query, or with --format jsonl one JSON object per query:
    {"query": {"id", "label", "path"}, "results": [{"rank", "id", "distance", "label",
    "path"}, ...]}. Multi-hot labels are lists of label indices.

    With --server URL the same queries go to a running `fghash serve` and PATH names one of
    its indexes; the output is what a local search of the same bundle prints.
    """
    radius_kw = radius_kwargs(radius, max_results)  # {} without --radius
    if server is not None:
        results = _search_server(
            server, str(index_path), k, images + more_images, codes, split, limit, code_hex,
            {"nprobe": nprobe, "ef_search": ef_search, "nflip": nflip, **radius_kw},
        )  # fmt: skip
        _print(results, fmt)
        return
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
        **radius_kw,
        rerank=rerank,
        oversample=oversample,
        rerank_metric=rerank_metric,
    )
    _print(found.results, fmt)
    if found.grid is not None:
        if found.missing:
            click.echo(f"note: {found.missing} image(s) could not be read (grey squares)", err=True)
        click.echo(f"wrote {found.grid}", err=True)


def _print(results: list[dict[str, Any]], fmt: str) -> None:
    """One JSON line per query, or the tables."""
    if fmt == "jsonl":
        for r in results:
            echo_json(r)
    else:
        click.echo(search_text(results))


# Options that act on a local bundle or a local network; the server has its own.
_LOCAL_ONLY = ("run", "grid", "data_root", "force", "verify", "device", "engine", "rerank")
_BATCH = 500  # codes per request: well under the server's --max-queries default (1000)


def _search_server(
    url: str,
    name: str,
    k: int,
    images: tuple[Path, ...],
    codes: Path | None,
    split: str,
    limit: int | None,
    code_hex: str | None,
    params: dict[str, Any],
) -> list[dict[str, Any]]:
    """``fghash search --server``: the queries sent to the server, each query described
    as a local search describes it (codes-file rows by their id, label and path; images by
    the path given), so both print the same lines."""
    from fghash.client import Client
    from fghash.errors import FghashError

    ctx = click.get_current_context()
    given = [
        f"--{p.replace('_', '-')}"
        for p in _LOCAL_ONLY
        if ctx.get_parameter_source(p) != click.core.ParameterSource.DEFAULT
    ]
    if given:
        raise FghashError(
            f"{', '.join(given)} act on a local bundle; with --server the server searches "
            f"with its own settings, so leave {'them' if len(given) > 1 else 'it'} out."
        )
    if sum(bool(q) for q in (images, codes is not None, code_hex is not None)) != 1:
        raise FghashError(
            "give the queries either as a codes file (--codes CODES.h5), as one hex code "
            "(--code HEX) or as images (--image): one of them, not both and not none."
        )
    client = Client(url)
    if images:
        if any(params.get(p) is not None for p in ("nprobe", "ef_search", "nflip")):
            raise FghashError(
                "--nprobe, --ef-search and --nflip go with --codes or --code on a server; "
                "its image search uses the index's own settings."
            )
        radius_kw = {p: params[p] for p in ("radius", "max_results") if p in params}
        results = client.search_images(name, list(images), k, **radius_kw)
        for r, p in zip(results, images, strict=True):
            r["query"].pop("code", None)  # the server adds the image's code for its page
            r["query"]["path"] = str(p)
        return results
    if code_hex is not None:
        return client.search(name, codes=[code_hex], k=k, **params)
    return _search_codes_file(client, name, k, codes, split, limit, params)


def _search_codes_file(
    client: Any,
    name: str,
    k: int,
    codes: Path,
    split: str,
    limit: int | None,
    params: dict[str, Any],
) -> list[dict[str, Any]]:
    """The first ``limit`` rows of a local codes file's split, searched on the server in
    batches, each query described by its row (id, label, path) as a local search does."""
    from fghash.codes import read_codes
    from fghash.errors import FghashError
    from index.items import ItemMeta

    if limit is not None and limit < 1:
        raise FghashError(f"limit must be a positive integer, got {limit!r}.")
    s = read_codes(codes, splits=[split], features=False, attributes=False)[split]
    n = len(s) if limit is None else min(limit, len(s))
    rows = ItemMeta(
        ids=s.ids[:n],
        labels=None if s.labels is None else s.labels[:n],
        paths=None if s.paths is None else s.paths[:n],
    )
    results: list[dict[str, Any]] = []
    for start in range(0, n, _BATCH):
        stop = min(start + _BATCH, n)
        found = client.search(name, codes=s.codes[start:stop], k=k, **params)
        for i, r in zip(range(start, stop), found, strict=True):
            r["query"] = rows.record(i)
            results.append(r)
    return results
