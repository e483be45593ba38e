"""Progress as log lines: one per epoch or phase, with elapsed time and an estimate left.

Progress bars (tqdm) show only on a terminal; a long command whose stderr goes to a file
or a pipe would otherwise say nothing for minutes. :class:`Progress` logs one INFO line
per finished step, e.g. ``training 12 bits: epoch 7/54 done (iteration 3/18), 1 min
05 s elapsed, about 7 min 16 s left``. The estimate is the mean time per step of *this*
process times the steps left (a resumed run does not count the steps done before it).

    p = Progress("training", total=max_iter * epochs, done=already_done, logger=log)
    for ...:
        ...
        p.step("epoch 7/54")
"""

from __future__ import annotations

import logging
import time

__all__ = ["Progress", "format_seconds"]


def format_seconds(seconds: float) -> str:
    """``"12 s"``, ``"3 min 05 s"``, ``"2 h 04 min"``: short and readable."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


class Progress:
    """Counts finished steps of a known total and logs a line for each one."""

    def __init__(
        self,
        what: str,
        total: int,
        *,
        done: int = 0,
        logger: logging.Logger | None = None,
        level: int = logging.INFO,
    ) -> None:
        self.what = what
        self.total = max(0, int(total))
        self.done = int(done)
        self._start_done = self.done
        self._t0 = time.monotonic()
        self._log = logger or logging.getLogger(__name__)
        self._level = level
        self._last_line = self._t0

    @property
    def elapsed(self) -> float:
        """Seconds since this object was made."""
        return time.monotonic() - self._t0

    def left(self) -> float | None:
        """Estimated seconds left, from this process's mean time per step (None before one)."""
        steps = self.done - self._start_done
        if steps <= 0:
            return None
        return self.elapsed / steps * max(0, self.total - self.done)

    def line(self, detail: str = "") -> str:
        """The line :meth:`step` logs for the current count."""
        left = self.left()
        est = "" if left is None else f", about {format_seconds(left)} left"
        detail = f" ({detail})" if detail else ""
        return (
            f"{self.what}: {self.done}/{self.total} done{detail}, "
            f"{format_seconds(self.elapsed)} elapsed{est}"
        )

    def step(self, detail: str = "", n: int = 1, *, every: float = 0.0) -> str | None:
        """Count ``n`` finished steps and log the line; returns it.

        With ``every`` > 0 the line is logged only when ``every`` seconds have passed
        since the last one (for fine-grained steps such as batches, whose caller logs its
        own line at the end); None is returned when nothing was logged.
        """
        self.done += n
        now = time.monotonic()
        if every > 0 and now - self._last_line < every:
            return None
        self._last_line = now
        text = self.line(detail)
        self._log.log(self._level, "%s", text)
        return text
