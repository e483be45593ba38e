"""``fghash info``, ``fghash build-index`` and ``fghash add``: index bundles."""

from __future__ import annotations

from pathlib import Path

import click

from fghash.cli._app import UserError, main
from fghash.cli._options import (
    at_most,
    device_option,
    echo_json,
    force_option,
    format_option,
    out_option,
    wait_option,
)
from fghash.cli._output import built_text, info_text

__all__ = ["add_cmd", "build_index_cmd", "info_cmd", "remove_cmd"]


@main.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@format_option("table", "json")
@click.option(
    "--verify",
    is_flag=True,
    help="Index bundle: compare the SHA-256 of index.faiss with index.json whatever its size.",
)
def info_cmd(path: Path, fmt: str, verify: bool) -> None:
    """What a codes file (splits, sizes, bits, method, config) or index bundle holds.

    Exits with status 2 after the description when the file or bundle is unusable
    (a damaged index.faiss, duplicate ids, ...), saying why on stderr.
    """
    from index import describe

    d = describe(path, verify=verify)
    if fmt == "json":
        echo_json(d)
    else:
        click.echo(info_text(d))
    if d.get("problems"):
        raise UserError(" ".join(d["problems"]))


@main.command("build-index")
@click.argument("codes", metavar="CODES.h5", type=click.Path(path_type=Path))
@out_option("Bundle folder to write.")
@click.option(
    "--type",
    "kind",
    default="flat",
    show_default=True,
    metavar="TYPE",
    help="flat (exact), ivf, hnsw, hash or multihash.",
)
@click.option(
    "--nlist",
    type=at_most(2**24),
    help="ivf: number of lists (default: sqrt(N), >= 39 items each).",
)
@click.option(
    "--hnsw-m", type=at_most(1024), default=32, show_default=True, help="hnsw: links per node."
)
@click.option(
    "--hash-b", type=at_most(64), help="hash/multihash: bits per hash table (default: log2 N)."
)
@click.option(
    "--nhash", type=at_most(4096), help="multihash: number of hash tables (default: bits // b)."
)
@device_option()
@click.option(
    "--split", default="database", show_default=True, help="Split of the codes file to index."
)
@click.option(
    "--backend",
    type=click.Choice(["faiss", "milvus"]),
    default="faiss",
    show_default=True,
    help="faiss: a local index file; milvus: a Milvus collection (needs --uri).",
)
@click.option("--uri", help="milvus: a Milvus Lite file (PATH.db) or a server (http://host:19530).")
@click.option("--collection", help="milvus: collection name [fghash_<name of --out>].")
@click.option(
    "--milvus-index",
    type=click.Choice(["BIN_FLAT", "BIN_IVF_FLAT"]),
    default="BIN_FLAT",
    show_default=True,
    help="milvus: exact BIN_FLAT, or BIN_IVF_FLAT (servers only; --nlist lists).",
)
@force_option("Replace an existing bundle at --out.")
@wait_option("--out")
def build_index_cmd(
    codes: Path,
    out: Path,
    kind: str,
    nlist: int | None,
    hnsw_m: int,
    hash_b: int | None,
    nhash: int | None,
    device: str,
    split: str,
    backend: str,
    uri: str | None,
    collection: str | None,
    milvus_index: str,
    force: bool,
    wait: float,
) -> None:
    """Build a FAISS binary index (or a Milvus collection) over one split of CODES.h5 and
    save it as a bundle."""
    from index import build_bundle

    index, folder = build_bundle(
        codes,
        out,
        backend=backend,
        split=split,
        kind=kind,
        nlist=nlist,
        device=device,
        overwrite=force,
        uri=uri,
        collection=collection,
        milvus_index=milvus_index,
        wait=wait,
        hnsw_m=hnsw_m,
        hash_b=hash_b,
        nhash=nhash,
    )
    click.echo(built_text(index, milvus_index))
    click.echo(f"saved to {folder}")


@main.command("add")
@click.argument("index_path", metavar="PATH", type=click.Path(path_type=Path))
@click.argument("new_codes", metavar="[NEW.h5]", required=False, type=click.Path(path_type=Path))
@click.option("--split", default="database", show_default=True, help="Split of NEW.h5 to add.")
@click.option(
    "--run", "run_dir", type=click.Path(file_okay=False), help="Trained run to encode --images."
)
@click.option(
    "--images",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Image file or folder to encode with --run and add (repeatable).",
)
@click.option(
    "--label",
    type=click.IntRange(-(2**62), 2**62),
    help="Class of every added image (when the index has labels).",
)
@click.option(
    "--first-id",
    type=click.IntRange(-(2**62), 2**62),
    help="Id of the first added image [largest id + 1].",
)
@click.option("--batch-size", type=click.IntRange(1, 65536), default=64, show_default=True)
@device_option("cuda")
@click.option(
    "--codes-file/--no-codes-file",
    default=True,
    show_default=True,
    help="Also append to the codes file the index was built from (kept in step).",
)
@click.option(
    "--allow-mixed",
    is_flag=True,
    help="Add codes of another method or run than the index's (refused by default).",
)
@wait_option("PATH")
def add_cmd(
    index_path: Path,
    new_codes: Path | None,
    split: str,
    run_dir: str | None,
    images: tuple[Path, ...],
    label: int | None,
    first_id: int | None,
    batch_size: int,
    device: str,
    codes_file: bool,
    allow_mixed: bool,
    wait: float,
) -> None:
    """Append new items to the index bundle at PATH without rebuilding it.

    The items come from a codes file NEW.h5 (its --split), or are images encoded with a
    trained --run. Their ids must be new; the bundle's codes file gets them too
    (unless --no-codes-file) and index.json its new checksum. Nothing is half written.
    """
    from fghash.ops.indexes import add_items

    done = add_items(
        index_path,
        new_codes,
        split=split,
        run=run_dir,
        images=images,
        label=label,
        first_id=first_id,
        batch_size=batch_size,
        device=device,
        update_codes=codes_file,
        allow_mixed=allow_mixed,
        wait=wait,
    )
    click.echo(f"added {done.added} items to {index_path}: {done.total} in all")
    if done.codes_file is not None:
        click.echo(f"appended them to {done.codes_file}")


@main.command("remove")
@click.argument("index_path", metavar="PATH", type=click.Path(path_type=Path))
@click.option("--ids", "ids_text", help="Ids of the items to remove, comma-separated.")
@click.option(
    "--ids-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A text file of ids to remove, one per line.",
)
@click.option(
    "--codes-file/--no-codes-file",
    default=True,
    show_default=True,
    help="Also remove them from the codes file the index was built from (kept in step).",
)
@wait_option("PATH")
def remove_cmd(
    index_path: Path, ids_text: str | None, ids_file: Path | None, codes_file: bool, wait: float
) -> None:
    """Remove items by id from the index bundle at PATH (flat, ivf and milvus indexes).

    Every id must be in the index. The items after a removed one move up; the codes file
    loses the same rows (unless --no-codes-file) and index.json records its new checksum.
    Nothing is half written: a remove killed part-way leaves the index as it was before
    or after.
    """
    from fghash.ops.indexes import remove_items
    from fghash.util.lists import parse_list

    if ids_text is None and ids_file is None:
        raise UserError("give the ids to remove with --ids 1,2,3 or --ids-file FILE.")
    ids = parse_list(ids_text, what="item ids", example="12,40,41") if ids_text else []
    done = remove_items(index_path, ids, ids_file=ids_file, update_codes=codes_file, wait=wait)
    click.echo(f"removed {done.removed} items from {index_path}: {done.total} left")
    if done.codes_file is not None:
        click.echo(f"removed them from {done.codes_file} too")
