"""The ``fghash`` command line: a thin click layer over library functions.

Each command parses its options, calls one library function and prints. Library errors
(:class:`fghash.errors.FghashError`) become one sentence on stderr and exit status 2,
never a traceback. Heavy imports (torch, FAISS) happen inside the commands that need
them, so ``fghash search`` never imports torch.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from fghash import __version__
from fghash.errors import FghashError

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


def echo_json(obj: Any) -> None:
    """Print one JSON object on one line."""
    click.echo(json.dumps(obj, default=str))


@click.group(cls=_Group, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="fghash")
def main() -> None:
    """fghash: fine-grained image retrieval with learned binary codes.

    \b
    Pipeline:
      fghash train        images -> run dir (checkpoint, learned database codes)
      fghash encode       run dir + images -> codes.h5
      fghash build-index  codes.h5 -> FAISS binary index bundle
      fghash search       index + queries -> ranked neighbours
      fghash bench        codes.h5 -> report.json, report.md, plots
      fghash info         what a codes file or index holds
      fghash demo         the whole chain on the embedded synthetic data set
    """


# --- fghash info -------------------------------------------------------------------


# --- fghash build-index ------------------------------------------------------------


# --- fghash search -----------------------------------------------------------------


# --- fghash train ------------------------------------------------------------------


# --- fghash encode -----------------------------------------------------------------


# --- fghash demo -------------------------------------------------------------------


# --- fghash bench ------------------------------------------------------------------


# --- fghash baseline ---------------------------------------------------------------


def _baseline_methods() -> list[str]:
    from fghash.baselines import list_baselines

    return list_baselines()


@main.command("baseline")
@click.argument("method", type=click.Choice(_baseline_methods(), case_sensitive=False))
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
