"""CPU threads and the OpenMP wait policy of an ``fghash`` process.

Two settings decide how fast torch (and FAISS) run on a small, possibly shared CPU:

* the number of compute threads (``torch.set_num_threads``; FAISS's
  ``omp_set_num_threads`` when FAISS is loaded): :func:`set_threads`, ``--threads``;
* how long an idle OpenMP thread spins before it sleeps. torch and faiss-cpu each bring
  their own GNU ``libgomp``; left alone, its idle threads spin about 300,000 times at
  every join (``OMP_WAIT_POLICY`` unset), milliseconds each time. On a machine where
  another process wants the same cores, the spinning threads take CPU time from the
  thread that still has work, and every parallel region waits for the slowest thread.

Measured on 2 cores, one training step of the demo's network (``a2net_efficient``,
ResNet-18, 64 px, batch 16), 2 threads, ms per step (median of 8)::

    idle threads                    quiet   one busy process beside it
    spin 300,000 (libgomp default)   133     521
    GOMP_SPINCOUNT=100,000           120     775
    GOMP_SPINCOUNT=30,000            126     522
    GOMP_SPINCOUNT=3,000             147     291
    GOMP_SPINCOUNT=0 (as PASSIVE)    186     259

Sleeping at once costs 40 % on a quiet machine (a futex wake-up between every two small
operators); the default spin costs 2× beside one busy process (4× for the faithful
``a2net``). :data:`SPIN_COUNT` spins, tens of microseconds, keep most of both:
:func:`prepare_environment` sets ``GOMP_SPINCOUNT`` to it.

``libgomp`` reads its environment once, when the library is loaded, so
:func:`prepare_environment` must run before the first ``import torch`` or
``import faiss``: the command-line entry points (:mod:`fghash.cli`, hence
``python -m fghash``) call it before importing anything else. A user who exported
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` keeps exactly what they chose.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

from fghash.errors import FghashError

__all__ = ["SPIN_COUNT", "default_threads", "prepare_environment", "set_threads"]

SPIN_COUNT = 3000  # libgomp spins before an idle thread sleeps (its default: 300,000)
_USERS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # the user's word on waiting wins


def prepare_environment(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set ``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` unless the user set a wait policy.

    Nothing changes when ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is already set (to
    anything but blanks). Returns ``True`` when it set the variable. Call it before torch
    or FAISS is imported; afterwards the loaded OpenMP runtimes no longer read it.
    """
    env = os.environ if environ is None else environ
    if any(env.get(name, "").strip() for name in _USERS):
        return False
    env["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
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
