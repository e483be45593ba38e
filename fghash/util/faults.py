"""Deterministic crash points, so tests can stop a writer at an exact step.

:func:`checkpoint` kills the process with ``SIGKILL`` (as ``kill -9`` would: no
``finally`` blocks, no atexit, no flush) when the environment variable ``FGHASH_KILL_AT``
equals the step's name. Writers call it between the steps of a multi-file change
(``"add:codes-renamed"``, ``"swap:exchanged"`` …) and tests check that the next
command finishes or undoes the dead writer's change from what it left. Unset, it costs
one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

__all__ = ["KILL_ENV", "checkpoint"]

KILL_ENV = "FGHASH_KILL_AT"


def checkpoint(name: str) -> None:
    """Die here, with ``SIGKILL``, when ``FGHASH_KILL_AT`` is ``name``."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
