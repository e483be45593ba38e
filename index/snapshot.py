"""Consistent reads, atomic switches and crash recovery for index bundles.

Three promises, kept here and nowhere else (writers also hold
:func:`fghash.util.locks.writer_lock`, which serialises them):

**A reader sees one version.** A bundle is never changed in place: a writer builds a
whole new folder beside it and switches it in (below). :func:`read_snapshot` opens the
bundle folder, reads it, and checks that the folder under the name is still the one it
opened (same inode; the open descriptor keeps that inode from being reused). If a write
switched the folder meanwhile, the read is repeated on the new one, so a search during
an ``add`` returns the whole old answer or the whole new one, and a read that failed
*because* the folder was switched is never reported as damage. Files the read leaves
open (memory maps of ``items.h5``, the handle :class:`index.items.LazyStrings` keeps)
stay on the version that was read even after the writer deletes it.

**A switch is one step.** :func:`swap_in` exchanges the new folder with the old one
atomically (Linux ``renameat2(RENAME_EXCHANGE)``): the name always holds a whole
bundle. Where the file system cannot exchange, two renames are used, and the gap
between them (the name missing, the old bundle under a hidden ``.old`` name) is closed
by :func:`recover`, which puts the ``.old`` back when its writer died.

**A change of several files is finished or undone.** ``fghash add`` grows the codes file
and the bundle together. It writes both new versions completely, then a journal
(``.NAME.journal`` beside the bundle, :func:`commit`) naming them, then renames the
codes file and switches the bundle, then deletes the journal. A writer killed at any
step leaves the journal; the next command on the bundle (reader or writer,
:func:`recover`) rolls the change forward from it, since both new versions were whole
before the journal was written: it never deletes the only good copy, and it removes
every temporary the dead writer left.

Each step calls :func:`fghash.util.faults.checkpoint`, so tests kill a writer there.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from fghash.errors import FghashError
from fghash.util.atomic import atomic_write_text, remove_stale, stale_owner, temp_prefix
from fghash.util.faults import checkpoint
from fghash.util.locks import writer_lock

__all__ = [
    "Change",
    "commit",
    "exchange",
    "journal_path",
    "new_revision",
    "read_snapshot",
    "recover",
    "swap_in",
    "tidy",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_READ_TRIES = 8
_META = "index.json"


def new_revision() -> str:
    """A fresh ``revision`` for ``index.json``: names one version of a bundle exactly."""
    return uuid.uuid4().hex


def _renameat2() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_EXCHANGE = _renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` in one atomic step; False where the system cannot."""
    if _EXCHANGE is None:
        return False
    if _EXCHANGE(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_in(tmp: Path, path: Path) -> None:
    """Put the folder ``tmp`` at ``path``; the old folder there, if any, is deleted.

    The name never lacks a whole bundle where :func:`exchange` works; elsewhere the old
    folder waits under a hidden ``.old`` name between two renames (see :func:`recover`).
    """
    if not os.path.lexists(path):
        os.rename(tmp, path)
        return
    if exchange(tmp, path):
        checkpoint("swap:exchanged")
        shutil.rmtree(tmp, ignore_errors=True)  # now the old version
        return
    old = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=".old", dir=path.parent))
    old.rmdir()
    os.rename(path, old)
    checkpoint("swap:moved-old")
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _same_folder(fd: int, folder: Path) -> bool:
    try:
        st = os.stat(folder)
    except OSError:
        return False
    here = os.fstat(fd)
    return (st.st_ino, st.st_dev) == (here.st_ino, here.st_dev)


def read_snapshot(folder: Path, read: Callable[[Path], T], *, tries: int = _READ_TRIES) -> T:
    """``read(folder)``, repeated until no writer switched the folder during it.

    An error while the folder stayed the same is the bundle's own and is raised as it
    is; one while it was switched is a race with a writer and the read starts again.
    """
    for attempt in range(tries):
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            fd = -1
        if fd < 0:
            if attempt + 1 == tries or not _switching(folder):
                raise FghashError(
                    f"{folder}: no such index bundle; build one with 'fghash build-index'."
                )
            time.sleep(0.01 * (attempt + 1))
            continue
        try:
            try:
                result = read(folder)
            except (FghashError, OSError):
                if _same_folder(fd, folder) or attempt + 1 == tries:
                    raise
                continue
            if _same_folder(fd, folder):
                return result
        finally:
            os.close(fd)
    raise FghashError(
        f"{folder} was replaced {tries} times while it was being read; try again when the "
        "writers are done."
    )


def _switching(folder: Path) -> bool:
    """Whether a live writer holds ``folder``'s old version under a ``.old`` name (the
    two-rename switch of a file system without exchange)."""
    prefix = f".{folder.name}."
    try:
        return any(
            e.name.startswith(prefix) and e.name.endswith(".old") for e in os.scandir(folder.parent)
        )
    except OSError:
        return False


# -- the journal of a change of several files ------------------------------------------


@dataclass
class Change:
    """One change of a bundle and, optionally, its codes file.

    ``bundle_new`` is a whole new bundle folder (its ``index.json`` has ``revision``);
    ``codes_new`` the whole new codes file that replaces ``codes``. ``redo`` names a
    change outside the files that must happen before the switch and may happen twice
    (``{"call": "module:function", "args": {...}}``, e.g. a Milvus delete by position):
    :func:`commit` makes it once the journal is written, :func:`recover` again.
    """

    bundle: str
    bundle_new: str
    revision: str
    codes: str | None = None
    codes_new: str | None = None
    redo: dict[str, Any] | None = None


def journal_path(bundle: str | os.PathLike[str]) -> Path:
    """The journal of ``bundle``'s change in progress: ``.NAME.journal`` beside it."""
    p = Path(os.path.abspath(bundle))
    return p.parent / f".{p.name}.journal"


def commit(change: Change) -> None:
    """Apply ``change`` (the caller holds the bundle's writer lock): journal, codes file,
    bundle, in that order, each step recoverable by :func:`recover`."""
    journal = journal_path(change.bundle)
    atomic_write_text(journal, json.dumps(asdict(change), indent=1) + "\n")
    checkpoint("commit:journal-written")
    _finish(change)
    journal.unlink(missing_ok=True)
    checkpoint("commit:done")


def _redo(change: Change) -> None:
    if not change.redo:
        return
    import importlib

    module, name = change.redo["call"].split(":")
    getattr(importlib.import_module(module), name)(**change.redo.get("args", {}))
    checkpoint("commit:redone")


def _finish(change: Change) -> None:
    if _revision(Path(change.bundle_new)) == change.revision:
        _redo(change)  # before the switch: the new version's state outside the files
    if change.codes_new and os.path.exists(change.codes_new):
        os.replace(change.codes_new, change.codes)  # type: ignore[arg-type]
        checkpoint("commit:codes-renamed")
    bundle, new = Path(change.bundle), Path(change.bundle_new)
    if _revision(new) == change.revision:
        swap_in(new, bundle)
        checkpoint("commit:bundle-switched")
    elif new.exists():
        shutil.rmtree(new, ignore_errors=True)  # the old version, left by a dead writer


def _revision(folder: Path) -> str | None:
    try:
        meta = json.loads((folder / _META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta.get("revision") if isinstance(meta, dict) else None


def _read_journal(path: Path) -> Change | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Change(**data)
    except (OSError, ValueError, TypeError):
        return None


def recover(bundle: str | os.PathLike[str]) -> bool:
    """Finish a dead writer's change of ``bundle`` (the caller holds its writer lock).

    With a journal: if its new bundle is whole, the codes file and bundle are switched
    in (roll forward); if the switch already happened, only the leftovers go; if the
    new bundle is gone (never the case for a journal fghash wrote), the new codes file
    is dropped and the bundle stays as it is. Without one: a bundle
    missing under its name while a dead writer's ``.old`` holds it is put back. Then
    dead writers' temporaries beside the bundle and its codes file are removed.
    Returns whether anything was recovered.
    """
    bundle = Path(os.path.abspath(bundle))
    journal = journal_path(bundle)
    change = _read_journal(journal) if journal.exists() else None
    done = False
    if change is not None:
        if _revision(bundle) != change.revision and _revision(Path(change.bundle_new)) is None:
            if change.codes_new:
                Path(change.codes_new).unlink(missing_ok=True)
        else:
            _finish(change)
        log.warning("finished the change to %s that an interrupted fghash process began", bundle)
        journal.unlink(missing_ok=True)
        done = True
    elif journal.exists():
        journal.unlink(missing_ok=True)  # unreadable: written half by a dead writer
    if not os.path.lexists(bundle):
        done = _restore_old(bundle) or done
    remove_stale(bundle.parent, bundle.name)
    codes = change.codes if change is not None and change.codes else _codes_of(bundle)
    if codes is not None:
        _tidy_codes(Path(codes))
    return done


def _codes_of(bundle: Path) -> str | None:
    """The codes file ``bundle``'s ``index.json`` names, if it can be read."""
    try:
        meta = json.loads((bundle / _META).read_text(encoding="utf-8"))
        path = (meta.get("codes") or {}).get("path")
    except (OSError, ValueError, AttributeError):
        return None
    return path if isinstance(path, str) else None


def _tidy_codes(codes: Path) -> None:
    """Remove what dead writers left beside a codes file (temporaries, the lock file),
    unless a live writer holds it."""
    if not _leftovers(codes):
        return
    try:
        with writer_lock(codes, wait=0):
            remove_stale(codes.parent, codes.name)
    except (FghashError, OSError) as e:
        log.debug("left %s to its writer: %s", codes, e)


def _leftovers(path: Path) -> bool:
    """Whether a hidden entry of fghash's for ``path`` lies beside it (a journal, a lock
    file, a temporary): one listing of the folder."""
    prefix = f".{path.name}."
    try:
        return any(e.name.startswith(prefix) for e in os.scandir(path.parent))
    except OSError:
        return False


def _restore_old(bundle: Path) -> bool:
    prefix = f".{bundle.name}."
    moved = [p for p in bundle.parent.glob(f"{prefix}*.old") if p.is_dir()]
    for old in sorted(moved, key=lambda p: p.stat().st_mtime, reverse=True):
        if stale_owner(old.name) is None:
            continue
        os.rename(old, bundle)
        log.warning("put back %s, which an interrupted fghash process had moved aside", bundle)
        return True
    return False


def tidy(bundle: str | os.PathLike[str]) -> None:
    """What a reader does before reading: when a dead writer left anything beside the
    bundle or its codes file (a journal, a moved bundle, temporaries, a lock file),
    :func:`recover` it, if no live writer holds the lock and the reader may write the
    folder; otherwise nothing. Costs one listing of the bundle's folder when there is
    nothing to do: a writer of the codes file through the bundle holds the bundle's lock
    too, so a dead one always leaves the bundle's lock file beside the bundle."""
    bundle = Path(os.path.abspath(bundle))
    if not _leftovers(bundle):
        return
    try:
        with writer_lock(bundle, wait=0):
            recover(bundle)
    except (FghashError, OSError) as e:
        log.debug("left %s to its writer: %s", bundle, e)
