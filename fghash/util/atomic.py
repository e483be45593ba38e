"""Atomic file writes: write a temporary file beside the target, then rename it.

A crash, an exception or Ctrl-C part-way through leaves the target as it was (absent or
the old version), never half written. The file ends up with the mode a plain
``open(path, "w")`` would give (``0o666`` less the umask), not ``mkstemp``'s ``0600``.

Temporary names carry the writer's process id, ``.NAME.<pid>-<random><suffix>``
(:func:`temp_prefix`), so that after a ``kill -9`` the next writer in the same folder
recognises them as fghash's own and removes the ones whose process is gone
(:func:`remove_stale`); a temporary of a live process is never touched.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "default_file_mode",
    "default_folder_mode",
    "final_name",
    "process_umask",
    "remove_stale",
    "stale_owner",
    "temp_prefix",
]

log = logging.getLogger(__name__)

# .NAME.<pid>-<8 random characters from mkstemp/mkdtemp><suffix>
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[a-z0-9_]{8}(?P<suffix>\.tmp|\.old|\.png)$")


def process_umask() -> int:
    """The process umask, read from ``/proc/self/status`` where it can be: setting the
    umask to read it back changes it for every thread of the process for a moment."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open(path, "w")`` would give."""
    return 0o666 & ~process_umask()


def default_folder_mode() -> int:
    """``0o777`` less the process umask: the mode ``os.mkdir`` gives (``mkdtemp`` gives
    ``0o700``, so folders made through it are set to this before they are renamed)."""
    return 0o777 & ~process_umask()


def temp_prefix(name: str) -> str:
    """The prefix of this process's temporary names for a target called ``name``."""
    return f".{name}.{os.getpid()}-"


def final_name(path: str | os.PathLike[str]) -> Path:
    """The path a temporary path stands for (each temporary component renamed back)."""
    parts = []
    for part in Path(path).parts:
        m = _TEMP_RE.match(part)
        parts.append(m.group("name") if m else part)
    return Path(*parts) if parts else Path(path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but is not ours to signal, or we cannot tell: leave it
    return True


def _target(name: str) -> tuple[str, int] | None:
    """``(target name, writer pid)`` of a temporary name, nested ones unwrapped (a
    temporary of a temporary, as a writer that writes a file it renames later makes)."""
    m = _TEMP_RE.match(name)
    if not m:
        return None
    inner = _target(m.group("name"))
    return (inner[0] if inner else m.group("name")), int(m.group("pid"))


def stale_owner(name: str) -> int | None:
    """The pid of the dead fghash process whose temporary ``name`` is, else None."""
    t = _target(name)
    return t[1] if t is not None and not _alive(t[1]) else None


def remove_stale(folder: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Remove temporaries of dead writers in ``folder`` (only those for ``name`` if given).

    Only names of the form :func:`temp_prefix` makes are considered; a folder that
    cannot be listed or an entry that cannot be removed is left as it is. Returns
    the paths removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        t = _target(entry.name)
        if t is None or (name is not None and t[0] != name) or _alive(t[1]):
            continue
        p = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(p)
            else:
                p.unlink()
        except OSError:
            continue
        log.info("removed %s, left behind by an interrupted fghash process %s", p, t[1])
        removed.append(p)
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success rename it onto ``path``.

    The caller writes the temporary path by any means (h5py, ``torch.save``, matplotlib).
    On an exception the temporary file is removed and ``path`` is untouched. Stale
    temporaries for the same ``path`` left by dead processes are removed first.
    """
    path = Path(path)
    remove_stale(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is None:  # matplotlib, PIL and torch often leave it out
            e.filename = str(path)
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
