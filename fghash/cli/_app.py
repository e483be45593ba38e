"""The ``fghash`` command group: error handling at the boundary, logging, ``--version``.

Library errors (:class:`fghash.errors.FghashError`) and OS errors become one sentence on
stderr and exit status 2 (:class:`UserError`), never a traceback.
"""

from __future__ import annotations

import codecs
import io
import logging
import sys
from typing import Any

import click

from fghash import __version__
from fghash.errors import FghashError, escape_bytes, os_error_sentence
from fghash.util import threads as runtime

# Before any command imports torch or FAISS: their OpenMP runtimes read the wait policy
# once, when loaded (see fghash.util.threads). A policy the user exported is kept.
runtime.prepare_environment()

__all__ = ["CONTEXT_SETTINGS", "UserError", "main"]

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _escape_bytes_errors(e: UnicodeError) -> tuple[str, int]:
    """Encoding error handler: a byte of a file name that is not UTF-8 (a surrogate
    escape) is written as ``\\xNN``, anything else unencodable as ``backslashreplace``."""
    if isinstance(e, UnicodeEncodeError):
        chunk = e.object[e.start : e.end]
        if all("\udc80" <= c <= "\udcff" for c in chunk):
            return escape_bytes(chunk), e.end
    return codecs.backslashreplace_errors(e)


codecs.register_error("fghash-escape-bytes", _escape_bytes_errors)


def _escape_bytes_on_output() -> None:
    """Paths echoed as they are (``saved to PATH``) never fail to print, in any locale:
    stdout and stderr escape what they cannot encode instead of raising."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="fghash-escape-bytes")


class UserError(click.ClickException):
    """A mistake the user can fix: printed as ``Error: <sentence>``, exit status 2."""

    exit_code = 2


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            runtime.check_thread_environment()
            return super().invoke(ctx)
        except FghashError as e:
            raise UserError(escape_bytes(str(e))) from None
        except OSError as e:  # read-only folder, full disk, name too long: one sentence
            raise UserError(escape_bytes(os_error_sentence(e))) from None
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)


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
      fghash baseline     features -> codes.h5 by a shallow method (ITQ, LSH, ...)
      fghash tune         codes.h5 -> the index kind and parameters, by measurement
      fghash build-index  codes.h5 -> FAISS binary index bundle (or Milvus)
      fghash add          new codes or images -> appended to an index and its codes.h5
      fghash remove       item ids -> taken out of an index and its codes.h5
      fghash search       index + queries -> ranked neighbours
      fghash serve        index bundles -> HTTP search service and web page
      fghash bench        codes.h5 -> report.json, report.md, plots
      fghash explain      codes.h5 -> per-bit image grids, bit-attribute AUC, examples
      fghash info         what a codes file or index holds
      fghash demo         the whole chain on the embedded synthetic data set

    Library messages go to stderr (INFO; -v for debug, -q for warnings only).
    """
    _escape_bytes_on_output()
    _setup_logging(verbose, quiet)
