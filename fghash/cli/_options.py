"""Options and helpers shared by the fghash commands, spelled the same everywhere.

``--device`` takes ``auto|cpu|gpu|cuda`` in every command; ``gpu`` and ``cuda`` mean the
same and are normalised to the name the command's library call speaks (FAISS side:
``gpu``, torch side: ``cuda``). Output paths are ``-o/--out``, neighbour counts
``-k/--k``; comma-separated lists go through :func:`fghash.util.lists.parse_list`.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from fghash.errors import FghashError
from fghash.util.lists import parse_list
from fghash.util.threads import MAX_THREADS

__all__ = [
    "DEVICES",
    "MAX_EF_SEARCH",
    "MAX_K",
    "MAX_NFLIP",
    "MAX_NPROBE",
    "MAX_PER_BIT",
    "MAX_RADIUS",
    "MAX_RESULTS",
    "CommaList",
    "LazyChoice",
    "at_most",
    "command_line",
    "device_option",
    "echo_json",
    "flag_option",
    "force_option",
    "format_option",
    "k_option",
    "out_option",
    "radius_kwargs",
    "radius_options",
    "threads_option",
    "wait_option",
]

DEVICES = ("auto", "cpu", "gpu", "cuda")

# Upper bounds of the numeric options: far above any useful value, low enough that a
# typo (an extra zero, 10**30) gives click's one-sentence usage error instead of an
# integer overflow in FAISS or gigabytes of memory. Lower bounds are the library's word.
MAX_K = 2**24  # neighbours per query
MAX_NPROBE = 2**24  # ivf lists visited (never more than the lists of the index)
MAX_EF_SEARCH = 2**20  # hnsw search beam
MAX_NFLIP = 64  # hash bit flips; the bundle's own b bounds it further
MAX_PER_BIT = 100  # images per side of an explain grid
MAX_RADIUS = 1024  # Hamming radius (the longest code a codes file holds)
MAX_RESULTS = 2**24  # radius-search results per query (index.radius.MAX_RESULTS)


def at_most(limit: int) -> click.IntRange:
    """An integer no larger than ``limit`` (smaller ones are checked by the library, which
    says what they mean)."""
    return click.IntRange(max=limit)


def format_option(*choices: str) -> Any:
    """``--format``: ``table`` for people, ``json``/``jsonl`` for programs."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=choices[0],
        show_default=True,
        help="Output format.",
    )


def device_option(gpu: str = "gpu") -> Any:
    """``--device auto|cpu|gpu|cuda``; ``gpu`` and ``cuda`` both become ``gpu`` (the name
    FAISS-side calls take) or, with ``gpu="cuda"``, ``cuda`` (torch-side calls)."""

    def normalise(ctx: click.Context, param: click.Parameter, value: str) -> str:
        return gpu if value in ("gpu", "cuda") else value

    return click.option(
        "--device",
        type=click.Choice(list(DEVICES)),
        default="auto",
        show_default=True,
        callback=normalise,
        help="Where to run: auto picks the GPU when one is usable and says so; gpu and cuda "
        "are the same.",
    )


def threads_option(help: str | None = None) -> Any:
    """``--threads N`` (N >= 1; unset: the library's default)."""
    return click.option(
        "--threads",
        type=click.IntRange(min=1, max=MAX_THREADS),
        default=None,
        help=help
        or "CPU threads for torch (and FAISS) [default: OMP_NUM_THREADS if set, else the cores "
        "this process may use, fewer while other processes keep some of them busy].",
    )


def out_option(help: str, *, dest: str = "out", **kw: Any) -> Any:
    """``-o/--out PATH`` (required unless ``kw`` gives a default)."""
    kw.setdefault("required", "default" not in kw)
    kw.setdefault("type", click.Path(path_type=Path))
    return click.option("--out", "-o", dest, help=help, **kw)


def k_option(help: str, **kw: Any) -> Any:
    """``-k/--k``: neighbours per query (an integer unless ``kw`` gives another type)."""
    kw.setdefault("type", at_most(MAX_K))
    kw.setdefault("default", 10)
    kw.setdefault("show_default", kw["default"] is not None)
    return click.option("-k", "--k", "k", help=help, **kw)


def radius_options() -> Any:
    """``--radius R`` and ``--max-results N``: search by Hamming radius instead of ``-k``
    (:mod:`index.radius`); :func:`radius_kwargs` turns them into the library's arguments."""

    def decorate(f: Any) -> Any:
        f = click.option(
            "--max-results",
            type=at_most(MAX_RESULTS),
            help="With --radius: results per query at most [default: 1000]; a query cut "
            'there says so (table: a line; jsonl: "truncated": true).',
        )(f)
        return click.option(
            "--radius",
            type=at_most(MAX_RADIUS),
            metavar="R",
            help="Every item within Hamming distance R (<= R) instead of the k nearest, "
            "sorted by distance, ties by position (flat, ivf, hash, multihash, Milvus; "
            "not hnsw).",
        )(f)

    return decorate


def radius_kwargs(radius: int | None, max_results: int | None) -> dict[str, Any]:
    """``{"radius", "max_results"}`` for the library (empty without ``--radius``); ``-k``
    given beside ``--radius``, or ``--max-results`` without it, is one sentence."""
    if radius is None:
        if max_results is not None:
            raise FghashError("--max-results goes with --radius (a radius search).")
        return {}
    if click.get_current_context().get_parameter_source("k") is ParameterSource.COMMANDLINE:
        raise FghashError(
            "give -k or --radius, not both: a radius search returns every item within R "
            "(at most --max-results per query)."
        )
    return {"radius": radius, "max_results": max_results}


def force_option(help: str) -> Any:
    """``--force``: replace what is already there."""
    return click.option("--force", is_flag=True, help=help)


def wait_option(target: str) -> Any:
    """``--wait SECONDS``: how long a writer waits for another one holding ``target``'s
    lock (:func:`fghash.util.locks.writer_lock`); 0 stops at once with one sentence."""
    return click.option(
        "--wait",
        type=click.FloatRange(0, 86400),
        default=0,
        show_default=True,
        metavar="SECONDS",
        help=f"Wait up to SECONDS for another fghash process writing {target} (0: stop at once).",
    )


def flag_option(name: str, help: str) -> Any:
    """``--NAME/--no-NAME``, unset (``None``) unless given: the library's default rules."""
    return click.option(f"--{name}/--no-{name}", default=None, help=help)


class CommaList(click.ParamType):
    """A comma-separated list (``1,10,100``), parsed by :func:`fghash.util.lists.parse_list`."""

    name = "list"

    def __init__(
        self, convert: Callable[[str], Any] = int, what: str = "integers", example: str = "1,10,100"
    ) -> None:
        self.convert_item, self.what, self.example = convert, what, example

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, list):
            return value
        try:
            return parse_list(value, self.convert_item, what=self.what, example=self.example)
        except FghashError as e:
            self.fail(str(e), param, ctx)


class LazyChoice(click.Choice):  # type: ignore[type-arg]
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


def echo_json(obj: Any) -> None:
    """Print one JSON object on one line."""
    click.echo(json.dumps(obj, default=str))


def _words(value: Any) -> list[str]:
    if isinstance(value, list):
        return [",".join(map(str, value))]
    if isinstance(value, tuple):
        return [str(v) for v in value]
    return [str(value)]


def command_line() -> str:
    """The current command as a user would type it: its arguments, then the options given
    (lists comma-joined, flags by the spelling that was used), shell-quoted."""
    ctx = click.get_current_context()
    parts = ["fghash", ctx.info_name or ""]
    options: list[str] = []
    for p in ctx.command.params:
        name = p.name or ""
        v = ctx.params.get(name)
        if isinstance(p, click.Argument):
            parts += [] if v is None else _words(v)
        elif ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE and v is not None:
            assert isinstance(p, click.Option)
            if p.is_flag:
                options.append(max(p.opts if v else p.secondary_opts, key=len))
            elif p.multiple:
                for item in v:
                    options += [max(p.opts, key=len), str(item)]
            else:
                options += [max(p.opts, key=len), *_words(v)]
    return shlex.join(parts + options)
