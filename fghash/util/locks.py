"""Writer locks: one fghash process at a time changes a given bundle, codes file or folder.

:func:`writer_lock` takes an OS advisory lock (``fcntl.flock``) on a lock file beside
the target, ``<parent>/.<name>.lock``. The kernel drops the lock when the holder's file
descriptor closes, on any exit including ``kill -9``, so a dead writer never blocks the
next one and there is no stale-lock cleanup to get wrong. Readers take no lock.

The holder deletes the lock file before it lets go, so no file stays beside the target
after a command. That is safe because taking the lock checks that the file locked is
still the one under the name (same inode): a waiter that opened the old file before the
unlink finds it orphaned once it gets the flock, closes it and tries again on the new
name, so two writers never both "hold" the lock. A writer killed with ``kill -9`` leaves
the (unlocked) file behind; the next writer takes and removes it.

Within one process the lock is re-entrant: a library function that takes it (a bundle
switch) may run inside a command that already holds it (``fghash add``); a second
*thread* of the process waits for the first as another process would.

The lock file is created with the umask's mode (``0o666`` less the umask), so users who
may write the target's folder may also take its lock.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fghash.errors import FghashError

__all__ = ["lock_path", "writer_lock"]

log = logging.getLogger(__name__)

_POLL_S = 0.05


class _Held:
    """This process's hold on one lock file: the thread lock and how deep it is taken."""

    def __init__(self) -> None:
        self.thread_lock = threading.RLock()
        self.depth = 0
        self.fd = -1


_held: dict[Path, _Held] = {}
_held_guard = threading.Lock()


def _forget_held() -> None:
    """A forked child holds none of its parent's locks. It closes its copies of their
    descriptors: a flock lasts while any copy is open, so a worker that outlives a
    killed parent (a DataLoader worker) would otherwise keep the lock."""
    global _held_guard
    for held in _held.values():
        if held.fd >= 0:
            try:
                os.close(held.fd)
            except OSError:
                pass
    _held.clear()
    _held_guard = threading.Lock()


os.register_at_fork(after_in_child=_forget_held)


def _held_for(path: Path) -> _Held:
    with _held_guard:
        return _held.setdefault(path, _Held())


def lock_path(target: str | os.PathLike[str]) -> Path:
    """The lock file of ``target``: ``.<name>.lock`` in its (resolved) folder, so that
    two spellings of one path (relative, absolute, through a symlinked folder) share it."""
    p = Path(os.path.abspath(target))
    return p.parent.resolve() / f".{p.name}.lock"


def _holder(fd: int) -> str:
    """``" (pid N)"`` when the lock file records its holder's pid, else ``""``."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _record_pid(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError:
        pass  # the pid is only for the message; a full disk must not stop the writer


@contextmanager
def writer_lock(
    target: str | os.PathLike[str], *, wait: float | None = 0, what: str | None = None
) -> Iterator[Path]:
    """Hold the writer lock of ``target`` for the block; yield the lock file's path.

    ``wait``: seconds to wait for another writer (``0``: stop at once; ``None``: wait for
    ever). While waiting, one line "waiting for <what> (another fghash process is writing
    it)…" goes to stderr. When the time is up, :class:`FghashError` says who holds it.
    The "exists / no --force" checks of the caller belong inside the block, where no
    other writer can change the answer.
    """
    target = Path(target)
    what = what or str(target)
    path = lock_path(target)
    if not path.parent.is_dir():
        raise FghashError(f"cannot write {target}: the folder {path.parent} does not exist.")
    deadline = None if wait is None else time.monotonic() + max(0.0, wait)
    held = _held_for(path)
    timeout = -1 if deadline is None else max(0.0, deadline - time.monotonic())
    if not held.thread_lock.acquire(timeout=timeout):
        raise FghashError(
            f"{target} is being written by another thread of this process; "
            "wait with --wait SECONDS or try again."
        )
    try:
        if held.depth:
            held.depth += 1
            try:
                yield path
            finally:
                held.depth -= 1
            return
        fd = _acquire(path, target, what, deadline)
        held.depth, held.fd = 1, fd
        try:
            _record_pid(fd)
            yield path
        finally:
            held.depth, held.fd = 0, -1
            try:
                path.unlink()  # while still locked: see the module docstring
            except OSError:
                pass
            os.close(fd)  # closing drops the flock
    finally:
        held.thread_lock.release()


def _acquire(path: Path, target: Path, what: str, deadline: float | None) -> int:
    """Take the flock of ``path`` (polling until ``deadline``); the locked descriptor."""
    told = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        if _try_lock(fd):
            if _is_current(fd, path):
                return fd
            os.close(fd)  # locked a file its holder had already removed: take the new one
            continue
        holder = _holder(fd)
        os.close(fd)
        if deadline is not None and time.monotonic() >= deadline:
            raise FghashError(
                f"{target} is being written by another fghash process{holder}; "
                "wait with --wait SECONDS or try again."
            )
        if not told:
            msg = f"waiting for {what} (another fghash process is writing it)…"
            log.info(msg)
            print(msg, file=sys.stderr, flush=True)
            told = True
        time.sleep(_POLL_S)


def _is_current(fd: int, path: Path) -> bool:
    """Whether the locked descriptor is still the file under ``path``'s name."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return os.fstat(fd).st_ino == st.st_ino and os.fstat(fd).st_dev == st.st_dev
