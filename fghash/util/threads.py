"""CPU threads and the OpenMP wait policy of an ``fghash`` process.

Two settings decide how fast torch (and FAISS) run on a small, possibly shared CPU:

* the number of compute threads (``torch.set_num_threads``; FAISS's
  ``omp_set_num_threads`` when FAISS is loaded): :func:`set_threads`, ``--threads``;
* how long an idle OpenMP thread spins before it sleeps. torch and faiss-cpu each bring
  their own GNU ``libgomp``; left alone, its idle threads spin about 300,000 times at
  every join (``OMP_WAIT_POLICY`` unset), milliseconds each time. On a machine where
  another process wants the same cores, the spinning threads take CPU time from the
  thread that still has work, and every parallel region waits for the slowest thread.

Sleeping at once makes every join between two small operators a futex wake-up, which
is slow on a quiet machine; the default spin takes CPU time from the working thread
when another process shares the cores. :data:`SPIN_COUNT` spins (tens of microseconds)
keep most of both: :func:`prepare_environment` sets ``GOMP_SPINCOUNT`` to it. The
measurements behind the number are in ``CHANGELOG.md``.

``libgomp`` reads its environment once, when the library is loaded, so
:func:`prepare_environment` must run before the first ``import torch`` or
``import faiss``: the command-line entry points (:mod:`fghash.cli`, hence
``python -m fghash``) call it before importing anything else. A user who exported
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` keeps exactly what they chose.

The thread count follows the load when nobody fixed it (no ``--threads``, no
``OMP_NUM_THREADS``): beside a busy process, fewer threads than cores finish a step
sooner, because a parallel region waits for its slowest thread. :class:`LoadFollower`
measures, every few seconds, how much CPU time other processes took on this process's
cores (``/proc/stat`` minus this process's own CPU time) and uses the cores they leave
free, rounded, at least one;
the training loop calls :func:`adapt_threads` once per step. The count changes only when
two measurements in a row agree, so a short burst of other work does not make it flap.
Results computed with other thread counts can differ in the last bits (the order of
floating-point sums changes), so a run that must repeat bit for bit fixes ``--threads``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path

from fghash.errors import FghashError

__all__ = [
    "MAX_THREADS",
    "SPIN_COUNT",
    "LoadFollower",
    "adapt_threads",
    "busy_seconds",
    "check_thread_environment",
    "default_threads",
    "prepare_environment",
    "set_threads",
    "thread_summary",
    "usable_cores",
]

SPIN_COUNT = 3000  # libgomp spins before an idle thread sleeps (its default: 300,000)
_USERS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # the user's word on waiting wins
#: Most compute threads ``--threads`` or ``OMP_NUM_THREADS`` may ask for: more only makes
#: OpenMP allocate per-thread stacks until memory runs out.
MAX_THREADS = 1024


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


def check_thread_environment(environ: MutableMapping[str, str] | None = None) -> None:
    """Refuse an ``OMP_NUM_THREADS`` that is set but is not a comma-separated list of
    integers 1..:data:`MAX_THREADS` (OpenMP's syntax), before torch or FAISS load it:
    a huge value makes their OpenMP runtimes die out of memory, without a word."""
    env = os.environ if environ is None else environ
    value = env.get("OMP_NUM_THREADS", "").strip()
    if not value:
        return
    items = [v.strip() for v in value.split(",")]
    if not all(v.isascii() and v.isdigit() and 1 <= int(v) <= MAX_THREADS for v in items):
        raise FghashError(
            f"OMP_NUM_THREADS={value[:40]!r} is not a thread count from 1 to {MAX_THREADS}; "
            "set it to such a number or unset it."
        )


def _users_threads() -> int | None:
    users = os.environ.get("OMP_NUM_THREADS", "").strip()
    ok = users.isascii() and users.isdigit() and 0 < int(users) <= MAX_THREADS
    return int(users) if ok else None


def _usable_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """How many cores this process may run on (its CPU affinity, else every core)."""
    return max(1, len(_usable_cores()))


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when the user set it to a positive integer, else the number of
    cores this process may run on (its CPU affinity, else every core)."""
    return _users_threads() or usable_cores()


def _apply(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    faiss = sys.modules.get("faiss")
    if faiss is not None:
        faiss.omp_set_num_threads(n)


def busy_seconds(cores: list[int], stat: Path = Path("/proc/stat")) -> float | None:
    """CPU seconds the machine has spent busy on ``cores`` since boot (every process:
    user, nice, system, irq, softirq, and steal — time the hypervisor gave to others), or
    ``None`` where ``/proc/stat`` cannot be read (not Linux)."""
    try:
        text = stat.read_text()
    except OSError:
        return None
    wanted, ticks = set(cores), 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or not name[3:].isdigit() or int(name[3:]) not in wanted:
            continue
        f = [int(x) for x in rest.split()[:8]] + [0] * 8
        ticks += f[0] + f[1] + f[2] + f[5] + f[6] + f[7]
    return ticks / os.sysconf("SC_CLK_TCK")


class LoadFollower:
    """Use as many compute threads as the cores other processes leave free.

    :meth:`poll` (cheap; call it often) measures every ``interval`` seconds the CPU time
    others took on ``cores``: busy time of those cores (:func:`busy_seconds`) minus this
    process's own CPU time, over the wall time. Wanted threads: ``round(len(cores) -
    others)``, at least one. The count changes when two measurements in a row want the
    same new value; the first measurement, after only ``first_interval`` seconds, may
    change it at once, so that work started on a busy machine runs on the right count
    from its first steps. ``seconds_at`` keeps how long each count was in use.
    """

    def __init__(
        self,
        cores: list[int],
        threads: int,
        *,
        interval: float = 2.0,
        first_interval: float = 0.5,
        busy: Callable[[list[int]], float | None] = busy_seconds,
        own: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
        apply: Callable[[int], None] = _apply,
    ) -> None:
        self.cores, self.threads, self.interval = list(cores), threads, interval
        self.first_interval = first_interval
        self._busy, self._own, self._clock, self._apply = busy, own, clock, apply
        self.seconds_at: dict[int, float] = {}
        self._first, self._wanted = True, threads
        self._start()

    def _start(self) -> None:
        self._t, self._b, self._o = self._clock(), self._busy(self.cores), self._own()

    def others(self) -> float | None:
        """Cores' worth of CPU other processes used since the last measurement."""
        now, b, o = self._clock(), self._busy(self.cores), self._own()
        if b is None or self._b is None or now <= self._t:
            return None
        return max(0.0, (b - self._b) - (o - self._o)) / (now - self._t)

    def poll(self) -> int | None:
        """Measure when ``interval`` has passed; returns the new count when it changed."""
        now = self._clock()
        if now - self._t < (self.first_interval if self._first else self.interval):
            return None
        others = self.others()
        self.seconds_at[self.threads] = self.seconds_at.get(self.threads, 0.0) + now - self._t
        self._start()
        if others is None:
            return None
        want = min(len(self.cores), max(1, math.floor(len(self.cores) - others + 0.5)))
        agreed = self._first or want == self._wanted
        self._first, self._wanted = False, want
        if want == self.threads or not agreed:
            return None
        self._apply(want)
        self.threads = want
        return want

    def summary(self) -> str:
        """``"2"``, or e.g. ``"1-2 (1 for 250 s, 2 for 31 s; following the load)"``."""
        now = self._clock()
        spent = dict(self.seconds_at)
        spent[self.threads] = spent.get(self.threads, 0.0) + now - self._t
        used = sorted(n for n, t in spent.items() if t >= 0.5) or [self.threads]
        if len(used) == 1:
            return str(used[0])
        parts = ", ".join(f"{n} for {spent[n]:.0f} s" for n in used)
        return f"{used[0]}-{used[-1]} ({parts}; following the load)"


_follower: LoadFollower | None = None


def set_threads(threads: int | None = None) -> int:
    """Use ``threads`` compute threads in torch, and in FAISS if it is loaded.

    ``None`` means :func:`default_threads`; when the user fixed no count (no
    ``OMP_NUM_THREADS`` either) the count then follows the load from here on
    (:class:`LoadFollower`, through :func:`adapt_threads`). FAISS is never imported here
    (``fghash`` training does not need it); a FAISS loaded later keeps its own default
    unless this is called again. Returns the thread count applied.
    """
    global _follower
    n = default_threads() if threads is None else threads
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
        raise FghashError(f"--threads must be an integer from 1 to {MAX_THREADS}, got {threads!r}.")
    _apply(n)
    cores = _usable_cores()
    follow = threads is None and _users_threads() is None and len(cores) > 1
    _follower = LoadFollower(cores, n) if follow else None
    return n


def adapt_threads() -> int | None:
    """Let the thread count follow the load, when :func:`set_threads` chose it (cheap:
    a clock read between measurements). Returns the new count when it changed."""
    return None if _follower is None else _follower.poll()


def thread_summary() -> str:
    """The compute threads used since :func:`set_threads`, for a report line."""
    import torch

    return str(torch.get_num_threads()) if _follower is None else _follower.summary()
