"""The ``fghash`` command line: a thin click layer over library functions.

Each command parses its options, calls one library function and prints. Library errors
(:class:`fghash.errors.FghashError`) become one sentence on stderr and exit status 2,
never a traceback. Heavy imports (torch, FAISS) happen inside the commands that need
them, so ``fghash search`` never imports torch. One module per command group; shared
options in :mod:`fghash.cli._options`, text tables in :mod:`fghash.cli._output`.
"""

from fghash.cli import (  # noqa: F401  (importing registers the commands on main)
    codes_cmds,
    demo_cmd,
    index_cmds,
    report_cmds,
    search_cmd,
    serve_cmd,
    train_cmd,
    tune_cmd,
)
from fghash.cli._app import UserError, main

__all__ = ["main", "UserError"]
