"""One log line per phase of a long benchmark, with an estimate of what is left.

tqdm bars vanish when stderr is not a terminal (logs, CI, ``nohup``); these INFO lines
(the CLI logs INFO to stderr) do not. Unlike :class:`fghash.util.progress.Progress`, whose
steps cost about the same, benchmark phases differ by orders of magnitude, so each
carries its own estimate. The whole plan is known up front, each phase with a rough cost estimate in seconds
(from the sizes); as phases finish, the estimates of those still to come are scaled by
how the finished ones compared with theirs::

    left ≈ (Σ_done actual / Σ_done estimate) · Σ_to_come estimate

    fghash bench [3/9] float ranking: started, about 12 s (2 min 05 s left)
    fghash bench [3/9] float ranking: 9.8 s (elapsed 21 s, about 1 min 41 s left)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from fghash.util.progress import format_seconds

__all__ = ["Phases", "human_seconds"]

logger = logging.getLogger(__name__)


def human_seconds(s: float) -> str:
    """Seconds for a progress line: ``"3.2 s"`` below ten, else as
    :func:`fghash.util.progress.format_seconds` (``"59 s"``, ``"2 min 05 s"``)."""
    return f"{s:.1f} s" if s < 10 else format_seconds(s)


class Phases:
    """The phases of one run, announced and timed in order.

    ``plan``: ``(name, estimated seconds)`` for every phase, in the order they run.
    ``enabled=False`` logs nothing (timing still happens).
    """

    def __init__(
        self,
        plan: Sequence[tuple[str, float]],
        *,
        prefix: str = "fghash bench",
        enabled: bool = True,
    ) -> None:
        self.names = [n for n, _ in plan]
        self.estimates = {n: max(float(e), 1e-3) for n, e in plan}
        self.prefix = prefix
        self.enabled = enabled
        self.done: dict[str, float] = {}
        self.t0 = time.perf_counter()

    def _left(self) -> float:
        """Estimated seconds for the phases not finished yet."""
        spent = sum(self.done.values())
        guessed = sum(self.estimates[n] for n in self.done)
        scale = spent / guessed if guessed > 0 and spent > 0 else 1.0
        todo = [n for n in self.names if n not in self.done]
        return scale * sum(self.estimates[n] for n in todo)

    def _say(self, name: str, text: str) -> None:
        if self.enabled:
            i = self.names.index(name) + 1
            logger.info("%s [%d/%d] %s: %s", self.prefix, i, len(self.names), name, text)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the phase ``name``, with a line as it starts and ends (a name the plan lacks
        is added after the phases done, with a one-second estimate)."""
        if name not in self.estimates:
            self.names.insert(len(self.done), name)
            self.estimates[name] = 1.0
        est = self.estimates[name]
        self._say(name, f"started, about {human_seconds(est)} ({human_seconds(self._left())} left)")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.done[name] = time.perf_counter() - t0
            elapsed = time.perf_counter() - self.t0
            self._say(
                name,
                f"{human_seconds(self.done[name])} (elapsed {human_seconds(elapsed)}, "
                f"about {human_seconds(self._left())} left)",
            )

    def skip(self, name: str) -> None:
        """Mark a planned phase as not run (it leaves the estimate of what is left)."""
        self.estimates[name] = 1e-3
        self.done[name] = 0.0
