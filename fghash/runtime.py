"""CPU threads and the OpenMP wait policy of an ``fghash`` process.

Two settings decide how fast torch (and FAISS) run on a small shared CPU:

* the number of compute threads (``torch.set_num_threads``; FAISS's
  ``omp_set_num_threads`` when FAISS is loaded);
* the OpenMP wait policy. torch and faiss-cpu each bring their own ``libgomp``, whose
  idle threads by default spin for a while before sleeping (``OMP_WAIT_POLICY`` unset:
  about 300,000 spins at every join). On a machine where another process wants the same
  cores, the spinning threads take CPU time from the thread that still has work, and every
  parallel region waits for the slowest thread: the demo's training epochs took 4–5× longer
  with one busy process beside them. ``PASSIVE`` makes idle threads sleep at once.

``libgomp`` reads ``OMP_WAIT_POLICY`` once, when the library is loaded, so
:func:`prepare_environment` must run before the first ``import torch`` or
``import faiss``: the command-line entry points (:mod:`fghash.cli`, ``python -m fghash``)
call it before importing anything else. A value the user exported is kept.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

from fghash.errors import FghashError

__all__ = ["WAIT_POLICY", "prepare_environment", "default_threads", "set_threads"]

WAIT_POLICY = "PASSIVE"  # the default this project sets when the user set none


def prepare_environment(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already names a policy.

    Returns ``True`` when it set the variable. Call it before torch or FAISS is imported;
    afterwards the loaded OpenMP runtimes no longer read it.
    """
    env = os.environ if environ is None else environ
    if env.get("OMP_WAIT_POLICY", "").strip():
        return False
    env["OMP_WAIT_POLICY"] = WAIT_POLICY
    return True


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when the user set it to a positive integer, else the number of
    cores this process may run on (its CPU affinity, else every core)."""
    users = os.environ.get("OMP_NUM_THREADS", "").strip()
    if users.isdigit() and int(users) > 0:
        return int(users)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def set_threads(threads: int | None = None) -> int:
    """Use ``threads`` compute threads in torch, and in FAISS if it is loaded.

    ``None`` means :func:`default_threads`. FAISS is never imported here (``fghash``
    training does not need it); a FAISS loaded later keeps its own default unless this is
    called again. Returns the thread count applied.
    """
    n = default_threads() if threads is None else threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise FghashError(f"--threads must be a positive integer, got {threads!r}.")
    import torch

    torch.set_num_threads(n)
    faiss = sys.modules.get("faiss")
    if faiss is not None:
        faiss.omp_set_num_threads(n)
    return n
