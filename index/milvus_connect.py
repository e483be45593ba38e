"""Connecting to Milvus, and sharing a Milvus Lite database file between processes.

:func:`connect` opens a ``MilvusClient`` on a server address or on a Milvus Lite
``.db`` file. Milvus Lite serves one process at a time, so fghash processes take turns
on a Lite file (:func:`_hold_lite`); :func:`reason` turns Milvus's exceptions into one
line. pymilvus is imported on the first connection only.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from fghash.errors import FghashError
from fghash.util.locks import writer_lock

__all__ = ["LITE_WAIT_S", "connect", "is_lite_uri", "normalise_uri", "reason"]

# How long a command waits for a Milvus Lite database another fghash process holds (Lite
# serves one process at a time; fghash processes hold it for their lifetime).
LITE_WAIT_S = 120.0


def is_lite_uri(uri: str) -> bool:
    """True when ``uri`` names a local Milvus Lite database file rather than a server."""
    return "://" not in uri


def normalise_uri(uri: str) -> str:
    if is_lite_uri(uri):
        p = Path(uri).expanduser()
        if p.suffix != ".db":
            raise FghashError(
                f"--uri {uri!r} is neither a server address (http://host:19530) nor a Milvus "
                f"Lite database file ending in .db."
            )
        if not p.parent.is_dir():
            raise FghashError(f"--uri {uri}: the folder {p.parent} does not exist.")
        return str(p.resolve())
    return uri


class _DropBusy(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "opened by another program" not in record.getMessage()


@contextmanager
def _quiet_connect() -> Iterator[None]:
    """Silence the error lines Milvus Lite and pymilvus log when the database is busy (the
    caller retries, and says once that it waits)."""
    root, drop = logging.getLogger(), _DropBusy()
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "pymilvus"]
    quiet = [lg for lg in map(logging.getLogger, names) if not lg.disabled]
    root.addFilter(drop)
    for lg in quiet:
        lg.disabled = True
    try:
        yield
    finally:
        root.removeFilter(drop)
        for lg in quiet:
            lg.disabled = False


_lite_holds: dict[Path, ExitStack] = {}


def _hold_lite(db: Path) -> None:
    """Make this process the one that uses the Milvus Lite database ``db``, until it exits.

    Milvus Lite serves one process at a time, and a second process's failed attempt to
    open the database deletes the first one's socket and lock file (milvus-lite 2.5), after
    which two servers write one file. So fghash processes queue on a writer lock of their
    own (:func:`fghash.util.locks.writer_lock` on ``<db>-fghash``, waiting up to
    :data:`LITE_WAIT_S` with one line saying so) and never try while another holds it;
    at exit the server is stopped before the lock is let go. A program other than fghash
    holding the database is refused with one sentence, without trying to open it.
    """
    if db in _lite_holds:
        return
    stack = ExitStack()
    what = f"the Milvus Lite database {db} (Milvus Lite serves one process at a time)"
    stack.enter_context(writer_lock(Path(f"{db}-fghash"), wait=LITE_WAIT_S, what=what))
    try:
        _check_lite_free(db)
    except BaseException:
        stack.close()
        raise
    if not _lite_holds:
        atexit.register(_release_lite)
    _lite_holds[db] = stack


def _check_lite_free(db: Path) -> None:
    lock = db.parent / f".{db.name}.lock"  # milvus-lite's own (a POSIX record lock)
    if not lock.exists():
        return
    with open(lock, "a") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise FghashError(
                f"the Milvus Lite database {db} is open in another program; Milvus Lite "
                "serves one process at a time (use a Milvus server for several)."
            ) from None


def _release_lite() -> None:
    """Stop this process's Milvus Lite servers, then let the next process have them."""
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        server_manager_instance = None
    for db, stack in list(_lite_holds.items()):
        if server_manager_instance is not None:
            try:
                server_manager_instance.release_server(str(db))
            except Exception:  # noqa: S110 - at exit, the server may already be gone
                pass
        stack.close()
    _lite_holds.clear()


def connect(uri: str) -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # milvus-lite 2.5 imports pkg_resources on connect
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise FghashError(
                "the Milvus backend needs pymilvus (and milvus-lite for a local .db file): "
                "pip install 'fghash[milvus]'."
            ) from None
        if is_lite_uri(uri):
            _hold_lite(Path(uri))
        try:
            with _quiet_connect():
                return MilvusClient(uri)
        except Exception as e:  # pymilvus raises its own MilvusException and grpc errors
            raise FghashError(f"cannot connect to Milvus at {uri}: {reason(e)}") from None


def reason(e: Exception) -> str:
    msg = getattr(e, "message", None) or str(e)
    return " ".join(str(msg).split())[:300]
