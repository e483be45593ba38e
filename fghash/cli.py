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


if __name__ == "__main__":  # pragma: no cover
    main()
