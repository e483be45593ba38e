"""The ``fghash`` command line: a thin click layer over library functions.

Each command parses its options, calls one library function and prints. Library errors
(:class:`fghash.errors.FghashError`) become one sentence on stderr and exit status 2,
never a traceback. Heavy imports (torch, FAISS) happen inside the commands that need
them, so ``fghash search`` never imports torch.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from fghash import __version__
from fghash.errors import FghashError, os_error_sentence
from fghash.util import threads as runtime

# Before any command imports torch or FAISS: their OpenMP runtimes read the wait policy
# once, when loaded (see fghash.util.threads). A policy the user exported is kept.
runtime.prepare_environment()

__all__ = ["main", "UserError"]

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class UserError(click.ClickException):
    """A mistake the user can fix: printed as ``Error: <sentence>``, exit status 2."""

    exit_code = 2


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FghashError as e:
            raise UserError(str(e)) from None
        except OSError as e:  # read-only folder, full disk, name too long: one sentence
            raise UserError(os_error_sentence(e)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)


def format_option(*choices: str) -> Any:
    """Shared ``--format`` option (``table`` for people, ``json``/``jsonl`` for programs)."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=choices[0],
        show_default=True,
        help="Output format.",
    )


def device_option(choices: tuple[str, ...] = ("auto", "cpu", "gpu")) -> Any:
    """Shared ``--device`` option."""
    return click.option(
        "--device",
        type=click.Choice(list(choices)),
        default="auto",
        show_default=True,
        help="Where to run: auto picks the GPU when one is usable and says so.",
    )


def threads_option() -> Any:
    """Shared ``--threads`` option of the commands that run torch on the CPU."""
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="CPU threads for torch (and FAISS) [default: OMP_NUM_THREADS if set, else the cores "
        "this process may use, fewer while other processes keep some of them busy].",
    )


def echo_json(obj: Any) -> None:
    """Print one JSON object on one line."""
    click.echo(json.dumps(obj, default=str))


class _CliLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler :func:`main` installs; replaced on every invocation."""


_LOGGERS = ("fghash", "index", "bench")


def _setup_logging(verbose: bool, quiet: bool) -> None:
    """Library log lines to stderr: INFO by default, DEBUG with -v, warnings only with -q.

    Installed on the three top-level package loggers (they still propagate, so pytest's
    caplog sees them); a new handler each call, bound to the current ``sys.stderr``
    (click's test runner swaps it).
    """
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    fmt = "%(levelname)s %(name)s: %(message)s" if verbose else "%(levelname)s: %(message)s"
    for name in _LOGGERS:
        lg = logging.getLogger(name)
        for h in [h for h in lg.handlers if isinstance(h, _CliLogHandler)]:
            lg.removeHandler(h)
        handler = _CliLogHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(fmt))
        lg.addHandler(handler)
        lg.setLevel(level)


@click.group(cls=_Group, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="fghash")
@click.option("-v", "--verbose", is_flag=True, help="Show debug log lines.")
@click.option("-q", "--quiet", is_flag=True, help="Show only warnings and errors.")
def main(verbose: bool, quiet: bool) -> None:
    """fghash: fine-grained image retrieval with learned binary codes.

    \b
    Pipeline:
      fghash train        images -> run dir (checkpoint, learned database codes)
      fghash encode       run dir + images -> codes.h5
      fghash build-index  codes.h5 -> FAISS binary index bundle (or Milvus)
      fghash add          new codes or images -> appended to an index and its codes.h5
      fghash search       index + queries -> ranked neighbours
      fghash bench        codes.h5 -> report.json, report.md, plots
      fghash explain      codes.h5 -> per-bit image grids, bit-attribute AUC, examples
      fghash info         what a codes file or index holds
      fghash demo         the whole chain on the embedded synthetic data set

    Library messages go to stderr (INFO; -v for debug, -q for warnings only).
    """
    _setup_logging(verbose, quiet)


# --- fghash info -------------------------------------------------------------------


def _table(rows: list[tuple[str, ...]], indent: str = "") -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(indent + line for line in lines)


def _info_text(d: dict[str, Any]) -> str:
    if d["type"] == "index":
        params = ", ".join(f"{k}={v}" for k, v in sorted(d["params"].items())) or "-"
        src = d.get("codes") or {}
        rows = [
            ("index bundle", d["path"]),
            ("kind", d["kind"]),
            (
                "bits",
                f"{d['bits']} (stored as {d['dim']}{', zero-padded' if d.get('padded') else ''})",
            ),
            ("items", str(d["ntotal"])),
            ("params", params),
            (
                ("built on", f"{d.get('built_on', '?')}, FAISS {d.get('faiss_version', '?')}")
                if d["kind"] != "milvus"
                else (
                    "milvus",
                    f"collection {d['params'].get('collection')} at {d['params'].get('uri')}",
                )
            ),
            ("codes", f"{src.get('path', '-')} (split {src.get('split', '-')})"),
            ("checksum", str(src.get("checksum", "-"))),
            ("index.faiss", f"checked: {d.get('checked', '-')}"),
            ("created", str(d.get("created", "-"))),
        ]
        return _table(rows)
    rows = [
        ("codes file", d["path"]),
        ("bits", str(d["bits"])),
        ("method", str(d["method"])),
        ("created", str(d.get("created") or "-")),
        ("config", json.dumps(d["config"], sort_keys=True) if d["config"] else "-"),
        ("attributes", f"{d['attribute_names']} names" if d["attribute_names"] else "-"),
    ]
    splits = [("split", "items", "labels", "features")]
    for name, s in sorted(d["splits"].items()):
        feats = s.get("features")
        splits.append(
            (
                name,
                str(s["n"]),
                s.get("labels", "-"),
                f"{feats['kind']} [{feats['dim']}]" if feats else "-",
            )
        )
    return _table(rows) + "\n\n" + _table(splits)


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
        click.echo(_info_text(d))
    if d.get("problems"):
        raise UserError(" ".join(d["problems"]))


# --- fghash build-index ------------------------------------------------------------


@main.command("build-index")
@click.argument("codes", metavar="CODES.h5", type=click.Path(path_type=Path))
@click.option(
    "--out", "-o", required=True, type=click.Path(path_type=Path), help="Bundle folder to write."
)
@click.option(
    "--type",
    "kind",
    default="flat",
    show_default=True,
    metavar="TYPE",
    help="flat (exact), ivf, hnsw, hash or multihash.",
)
@click.option(
    "--nlist", type=int, help="ivf: number of lists (default: sqrt(N), >= 39 items each)."
)
@click.option("--hnsw-m", type=int, default=32, show_default=True, help="hnsw: links per node.")
@click.option("--hash-b", type=int, help="hash/multihash: bits per hash table (default: log2 N).")
@click.option("--nhash", type=int, help="multihash: number of hash tables (default: bits // b).")
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
@click.option("--force", is_flag=True, help="Replace an existing bundle at --out.")
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
) -> None:
    """Build a FAISS binary index (or a Milvus collection) over one split of CODES.h5 and
    save it as a bundle."""
    from index import build_bundle

    if backend == "milvus":
        from index.milvus import build_milvus_bundle

        if not uri:
            raise UserError("--backend milvus needs --uri (a PATH.db file or http://host:19530).")
        mindex, folder = build_milvus_bundle(
            codes,
            out,
            uri=uri,
            collection=collection,
            split=split,
            index_type=milvus_index,
            nlist=nlist,
            overwrite=force,
        )
        click.echo(
            f"loaded {mindex.ntotal} items, {mindex.bits}-bit codes, into Milvus collection "
            f"{mindex.collection} ({milvus_index}, HAMMING) at {mindex.params['uri']}"
        )
        click.echo(f"saved to {folder}")
        return

    index, folder = build_bundle(
        codes,
        out,
        split=split,
        kind=kind,
        nlist=nlist,
        device=device,
        overwrite=force,
        hnsw_m=hnsw_m,
        hash_b=hash_b,
        nhash=nhash,
    )
    params = ", ".join(f"{k}={v}" for k, v in sorted(index.params.items()))
    padding = f", stored as {index.dim} (zero-padded)" if index.padded else ""
    click.echo(
        f"built {index.kind} index on {index.device.upper()}: {index.ntotal} items, "
        f"{index.bits}-bit codes{padding}" + (f"; {params}" if params else "")
    )
    click.echo(f"saved to {folder}")


# --- fghash search -----------------------------------------------------------------


def _search_text(results: list[dict[str, Any]]) -> str:
    from index.query import format_label

    blocks = []
    for n, r in enumerate(results, start=1):
        q = r["query"]
        head = f"query {n}"
        if q["id"] is not None:
            head += f": id {q['id']}, label {format_label(q['label'])}"
            if q["path"] is not None:
                head += f", {q['path']}"
        elif q["path"] is not None:  # an image given with --image
            head += f": {q['path']}"
        rows = [("rank", "id", "distance", "label", "path")]
        for hit in r["results"]:
            rows.append(
                (
                    str(hit["rank"]),
                    str(hit["id"]),
                    str(hit["distance"]),
                    format_label(hit["label"]),
                    hit["path"] or "-",
                )
            )
        if len(rows) == 1:
            blocks.append(head + "\n  (nothing found)")
        else:
            blocks.append(head + "\n" + _table(rows, indent="  "))
    return "\n\n".join(blocks)


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
        click.echo(_search_text(results))
    if grid is not None and run_dir is not None:
        from fghash.viz.search_grid import write_search_grid

        path, missing = write_search_grid(results, grid, run_dir, data_root)
        if missing:
            click.echo(f"note: {missing} image(s) could not be read (grey squares)", err=True)
        click.echo(f"wrote {path}", err=True)


# --- fghash add --------------------------------------------------------------------


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
@click.option("--label", type=int, help="Class of every added image (when the index has labels).")
@click.option("--first-id", type=int, help="Id of the first added image [largest id + 1].")
@click.option("--batch-size", type=int, default=64, show_default=True)
@device_option(("auto", "cpu", "cuda"))
@click.option(
    "--codes-file/--no-codes-file",
    default=True,
    show_default=True,
    help="Also append to the codes file the index was built from (kept in step).",
)
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
) -> None:
    """Append new items to the index bundle at PATH without rebuilding it.

    The items come from a codes file NEW.h5 (its --split), or are images encoded with a
    trained --run. Their ids must be new; the bundle's codes file gets them too
    (unless --no-codes-file) and index.json its new checksum. Nothing is half written.
    """
    from index.append import (
        add_to_bundle,
        codes_features_kind,
        encode_new_items,
        next_id,
        read_new_items,
    )

    if (new_codes is None) == (not images):
        raise UserError("give the new items either as NEW.h5 or as --run RUN --images PATH.")
    if images:
        if run_dir is None:
            raise UserError("--images needs --run RUN, the trained run that encodes them.")
        start = next_id(index_path) if first_id is None else first_id
        bits, new = encode_new_items(
            run_dir,
            list(images),
            first_id=start,
            label=label,
            features=codes_features_kind(index_path) if codes_file else None,
            batch_size=batch_size,
            device=device,
        )
        origin = {"run": str(Path(run_dir).resolve()), "images": len(new)}
    else:
        bits, new = read_new_items(new_codes, split)  # type: ignore[arg-type]
        origin = {"path": str(Path(new_codes).resolve()), "split": split}  # type: ignore[arg-type]
    total, updated = add_to_bundle(
        index_path, bits, new, update_codes=codes_file, new_source=origin
    )
    click.echo(f"added {len(new)} items to {index_path}: {total} in all")
    if updated is not None:
        click.echo(f"appended them to {updated}")


# --- fghash train ------------------------------------------------------------------


from fghash.runs.config import (  # noqa: E402  (no torch: plain dataclasses)
    METHODS,
    PRESETS,
    PROTOCOLS,
    TRAIN_CROPS,
)


class _LazyChoice(click.Choice):  # type: ignore[type-arg]
    """A click.Choice whose choices are computed on first use, so that loading the CLI
    (``fghash --help``) does not import what computes them (numpy, the baselines)."""

    def __init__(self, load: Any, case_sensitive: bool = True) -> None:
        self._load, self._choices = load, None
        super().__init__([], case_sensitive=case_sensitive)

    @property  # type: ignore[override]
    def choices(self) -> Any:
        if self._choices is None:
            self._choices = tuple(self._load())
        return self._choices

    @choices.setter
    def choices(self, value: Any) -> None:
        pass


def _dataset_names() -> list[str]:
    from fghash.data import list_datasets

    return list_datasets()


def _flag(name: str, help: str) -> Any:
    return click.option(f"--{name}/--no-{name}", default=None, help=help)


@main.command("train", context_settings=CONTEXT_SETTINGS)
@click.option(
    "--dataset",
    required=True,
    type=_LazyChoice(_dataset_names),
    help="Data set name (layouts in docs/datasets.md).",
)
@click.option(
    "--data-root",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder holding the data set.",
)
@click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False), help="Run folder to write."
)
@click.option(
    "--bits",
    default="12",
    show_default=True,
    help="Code length(s), comma-separated; several give RUN/bits-K subfolders.",
)
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    default=None,
    help="Table-2 ablation row: adsh, +attention, +reconstruction, +decorrelation (= a2net), "
    "+self-consistency (journal).",
)
@click.option(
    "--protocol",
    type=click.Choice(list(PROTOCOLS)),
    default=None,
    help="Every default at once: paper (the paper's values, the reference code's where it is "
    "silent) or reference (the authors' code throughout). Other options override it. "
    "[default: paper]",
)
@click.option(
    "--method",
    type=click.Choice(list(METHODS)),
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
@click.option("--num-attention", type=int, default=None, help="Attention maps [default: bits].")
@click.option("--image-size", type=int, default=None, help="Crop size [default: 224].")
@click.option(
    "--resize", type=int, default=None, help="Shorter side before cropping [image size x 8/7]."
)
@click.option(
    "--train-crop",
    type=click.Choice(list(TRAIN_CROPS)),
    default=None,
    help="Training crop: RandomResizedCrop, or resize then RandomCrop [random-resized].",
)
@click.option("--batch-size", type=int, default=None, help="[default: 16]")
@click.option(
    "--max-iter",
    type=int,
    default=None,
    help="Outer ADSH iterations [paper: 60; 70 for food101, nabirds, vegfru].",
)
@click.option("--epochs", type=int, default=None, help="Epochs per outer iteration [paper: 20].")
@click.option(
    "--num-samples",
    type=int,
    default=None,
    help="Images sampled per outer iteration [2000; 4000 for nabirds and vegfru].",
)
@click.option(
    "--lr", type=float, default=None, help="Learning rate [2.5e-4; 5e-4 nabirds, vegfru]."
)
@click.option("--momentum", type=float, default=None, help="SGD momentum [0.91].")
@_flag("nesterov", "Nesterov momentum [on].")
@click.option("--weight-decay", type=float, default=None, help="[default: 1e-4]")
@click.option(
    "--lr-milestones",
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
    help="Outer iteration where the fine-tune stage starts: reconstruction term on, image "
    "weight raised [paper 0 (+self-consistency: the lr milestone), reference 35].",
)
@_flag("soft-similarity", "Reference code's soft targets for dissimilar pairs [on].")
@_flag("attention", "A2-Net attention branch.")
@_flag("reconstruction", "A2-Net reconstruction loss.")
@_flag("decorrelation", "A2-Net decorrelation loss.")
@_flag("self-consistency", "Journal extension: self-consistency loss.")
@_flag("quantization", "ADSH quantization term.")
@_flag("amp", "Mixed precision on CUDA [default: on].")
@click.option(
    "--val-fraction",
    type=float,
    default=None,
    help="Share of the train split held out for val mAP [0].",
)
@click.option("--eval-every", type=int, default=None, help="Outer iterations between val mAPs.")
@click.option(
    "--num-workers", type=int, default=None, help="DataLoader workers [0 on CPU, auto on CUDA]."
)
@click.option(
    "--nan-check-every", type=int, default=None, help="SGD steps between NaN checks [50]."
)
@click.option(
    "--keep-checkpoints", type=int, default=None, help="Per-iteration checkpoints kept [2]."
)
@click.option("--seed", type=int, default=None, help="Random seed [0].")
@device_option(("auto", "cpu", "cuda"))
@threads_option()
@click.option("--resume", is_flag=True, help="Continue the run(s) in --out exactly.")
def train_cmd(
    dataset: str,
    data_root: str,
    out: str,
    bits: str,
    preset: str | None,
    resume: bool,
    lr_milestones: str | None,
    threads: int | None,
    **options: Any,
) -> None:
    """Train A2-Net (or an ablation / baseline) with the ADSH protocol into a run folder.

    The defaults are the paper's protocol (--protocol paper) with ImageNet weights;
    config.json in the run folder records every resolved value. Under torchrun
    (torchrun --nproc_per_node N -m fghash train ...) the processes train one run together.
    """
    from fghash.runs.config import parse_bits, resolve_config
    from fghash.training.loop import train_many

    runtime.set_threads(threads)

    if lr_milestones is not None:
        try:
            options["lr_milestones"] = tuple(int(t) for t in lr_milestones.split(",") if t)
        except ValueError:
            raise UserError(
                f"--lr-milestones must be integers like 25,35, got {lr_milestones!r}."
            ) from None
    lengths = parse_bits(bits)
    cfg = resolve_config(dataset, preset, data_root=data_root, bits=lengths[0], **options)
    for r in train_many(cfg, lengths, out, resume=resume):
        if os.environ.get("RANK", "0") != "0":
            continue  # under torchrun, rank 0 speaks for the run
        vm = "" if r.val_map is None else f", val mAP {r.val_map:.4f}"
        click.echo(
            f"{r.config.bits} bits: {r.run_dir} ({r.iterations} outer "
            f"iteration{'' if r.iterations == 1 else 's'}, "
            f"{len(r.database_codes)} database codes{vm})"
        )


# --- fghash encode -----------------------------------------------------------------


@main.command("encode", context_settings=CONTEXT_SETTINGS)
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Codes file to write (HDF5).",
)
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
    help="DataLoader processes decoding and transforming images (default: the cores, at "
    "most 4; 0: in the main process).",
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
@device_option(("auto", "cpu", "cuda"))
@threads_option()
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
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
) -> None:
    """Encode a trained run's test (query) and training (database) splits to a codes file.

    Network outputs go to disk in parts as they are computed (.OUT.parts beside --out);
    the codes file appears under its name only when complete. After an interruption,
    the same command with --resume continues from the parts already written.
    """
    from fghash.codes import read_attrs
    from fghash.encoding.encode import encode_run

    runtime.set_threads(threads)

    path = encode_run(
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
    )
    info = read_attrs(path)
    sizes = ", ".join(f"{k} {v['n']}" for k, v in sorted(info["splits"].items()))
    skipped = sum(info["config"].get("encode", {}).get("skipped", {}).values())
    note = f"; skipped {skipped} unreadable image(s)" if skipped else ""
    click.echo(f"wrote {path}: {info['bits']} bits, {sizes}{note}")


# --- fghash demo -------------------------------------------------------------------


def _demo_summary(rep: Any, out: Path, seconds: dict[str, float]) -> str:
    """The closing table of ``fghash demo``."""
    feats = rep.features or {}
    rows = [("", "mAP@all", "ranking")]
    rows.append(
        (
            f"learned {rep.bits}-bit codes",
            f"{rep.map_hamming:.4f}",
            f"Hamming, tie-aware (stable ties: {rep.map_hamming_stable:.4f})",
        )
    )
    if rep.map_float is not None:
        rows.append(
            (
                "exact float search",
                f"{rep.map_float:.4f}",
                f"inner product over the {feats.get('dim')}-d {feats.get('kind')} features",
            )
        )
    rows.append(("chance", f"{rep.chance:.4f}", "random ranking (expected mAP)"))
    lines = [
        f"mAP@all, {rep.n_query} queries (test split) against {rep.n_database} database "
        "items (training split):",
        _table(rows, indent="  "),
        "  (the float search compares network outputs on both sides; the learned database",
        "  codes also carry the training labels, so they can beat it)",
        "",
        f"speed, CPU, {rep.threads} FAISS thread(s), k={rep.k}, median of {rep.runs} runs "
        f"(tiny database: mostly call overhead):",
    ]
    speed = [
        (
            f"IndexBinaryFlat ({rep.bits} bits stored as {rep.index_bits})",
            f"{rep.qps_binary:,.0f} queries/s",
        )
    ]
    if rep.qps_float is not None:
        speed.append(
            (f"IndexFlatIP ({feats.get('dim')}-d float32)", f"{rep.qps_float:,.0f} queries/s")
        )
        speed.append(("binary / float", f"{rep.speedup:.2f}x"))
    lines.append(_table(speed, indent="  "))
    lines += ["", _demo_times(seconds)]
    return "\n".join(lines)


def _demo_times(seconds: dict[str, float]) -> str:
    """The demo's phase times, one line each, then the total."""
    import torch

    rows = [(name, f"{s:.1f} s") for name, s in seconds.items()]
    rows.append(("total", f"{sum(seconds.values()):.1f} s"))
    used = runtime.thread_summary()
    threads = f"{used} CPU thread(s)" if used.isdigit() else f"CPU threads {used}"
    head = f"time, {threads}, torch {torch.__version__}:"
    return "\n".join([head, _table(rows, indent="  ")])


@main.command("demo", context_settings=CONTEXT_SETTINGS)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("fghash-demo"),
    show_default=True,
    help="Folder for the data, run, codes.h5 and index.",
)
@click.option("--bits", type=int, default=None, help="Code length [12].")
@device_option(("auto", "cpu", "cuda"))
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
    help="a2net: the paper's network, one layer4 pass per attention map (1.65x slower) "
    "[a2net_efficient].",
)
@click.option("--max-iter", type=int, default=None, help="Outer ADSH iterations.")
@click.option("--epochs", type=int, default=None, help="Epochs per outer iteration.")
@click.option("--num-samples", type=int, default=None, help="Images sampled per outer iteration.")
@click.option("--lr", type=float, default=None, help="Learning rate.")
@click.option("--seed", type=int, default=None, help="Seed of the data and the training.")
@threads_option()
@click.option("--force", is_flag=True, help="Train again (and regenerate changed data) in --out.")
def demo_cmd(
    out: Path, device: str, quick: bool, threads: int | None, force: bool, **overrides: Any
) -> None:
    """The whole chain on the embedded synthetic birds, no download: generate the data,
    train a small A2-Net, encode, build a FAISS index, search, and compare mAP with exact
    float search.

    Running it again in the same --out reuses the data and the trained run (an interrupted
    run resumes); other settings there need --force, which trains again.
    """
    import time

    from bench.quick import quick_report
    from fghash.demo import DemoConfig, run_demo
    from index import build_bundle, search_bundle

    runtime.set_threads(threads)
    cfg = (DemoConfig.quick() if quick else DemoConfig()).replace(**overrides)
    res = run_demo(cfg, out, device=device, force=force, step=click.echo)
    seconds = dict(res.seconds)
    bundle = out / "index"
    click.echo(f"[index] exact binary index (IndexBinaryFlat) -> {bundle}")
    t0 = time.perf_counter()
    build_bundle(
        res.codes_path,
        bundle,
        device="gpu" if device == "cuda" else device,
        overwrite=True,
    )
    seconds["index"] = time.perf_counter() - t0
    k = min(5, res.n_train)
    t0 = time.perf_counter()
    results = search_bundle(bundle, k, codes=res.codes_path, limit=3, device="cpu")
    seconds["search"] = time.perf_counter() - t0
    click.echo(f"[search] the first {len(results)} test images, top {k}:")
    click.echo(_search_text(results))
    click.echo("[evaluate] mAP and speed")
    t0 = time.perf_counter()
    # one thread: a search of a few hundred codes is over before a second OpenMP thread
    # wakes (IndexBinaryFlat, 160 queries x 480 codes: 1.9M queries/s on one thread,
    # 0.14M on two with the bounded spin of fghash.util.threads)
    rep = quick_report(res.codes_path, k=min(10, res.n_train), threads=1)
    seconds["eval"] = time.perf_counter() - t0
    click.echo("")
    click.echo(_demo_summary(rep, out, seconds))
    click.echo("")
    click.echo("next:")
    for line in (
        f"fghash search {bundle} --codes {res.codes_path} --limit 5 -k 10",
        f"fghash bench {res.codes_path} --out {out / 'bench'}",
        f"fghash info {res.codes_path}",
        f"fghash encode {res.run_dir} --out {out / 'codes-backbone.h5'} --features backbone",
    ):
        click.echo(f"  {line}")


# --- fghash bench ------------------------------------------------------------------


def _int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers such as 1,10,100, got {value!r}."
        ) from None


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
    callback=_int_list,
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


# --- fghash explain ----------------------------------------------------------------


def _command_line(name: str, args: list[str]) -> str:
    """The current command as a user would type it: arguments, then non-default options."""
    ctx = click.get_current_context()
    parts = ["fghash", name, *args]
    for p in ctx.command.params:
        v = ctx.params.get(p.name or "")
        if not isinstance(p, click.Option) or v in (None, False, p.default):
            continue
        flag = max(p.opts, key=len)
        parts += [flag] if v is True else [flag, str(v)]
    return shlex.join(parts)


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
    command = _command_line("explain", [str(c) for c in codes])
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
        click.echo(_table(rows, indent="  "))
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


# --- fghash baseline ---------------------------------------------------------------


def _baseline_methods() -> list[str]:
    from fghash.baselines import list_baselines

    return list_baselines()


@main.command("baseline")
@click.argument("method", type=_LazyChoice(_baseline_methods, case_sensitive=False))
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
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output codes file; with several --bits, codes.h5 becomes codes-12.h5, codes-24.h5, ...",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--force", is_flag=True, help="Replace existing output files.")
@format_option("table", "jsonl")
def baseline_cmd(
    method: str, features_path: str, bits: str, out_path: str, seed: int, force: bool, fmt: str
) -> None:
    """Fit a shallow hashing baseline (METHOD) on the database features and write codes files.

    The database split is the training split (ADSH protocol); database and query are
    both encoded. The codes files work with build-index, search and bench unchanged.
    """
    from fghash.baselines.run import parse_bits, run_baseline

    bits_list = parse_bits(bits)
    paths = run_baseline(
        method.lower(), features_path, bits_list, out_path, seed=seed, overwrite=force
    )
    for b, p in zip(bits_list, paths, strict=True):
        if fmt == "jsonl":
            echo_json({"method": method.lower(), "bits": b, "path": str(p)})
        else:
            click.echo(f"{method.lower()} {b:>4} bits -> {p}")


if __name__ == "__main__":  # pragma: no cover
    main()
