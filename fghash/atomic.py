"""Atomic file writes: write a temporary file beside the target, then rename it.

A crash, an exception or Ctrl-C part-way through leaves the target as it was (absent or
the old version), never half written. The file ends up with the mode a plain
``open(path, "w")`` would give (``0o666`` less the umask), not ``mkstemp``'s ``0600``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "default_file_mode"]


def default_file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open(path, "w")`` would give."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success rename it onto ``path``.

    The caller writes the temporary path by any means (h5py, ``torch.save``, matplotlib).
    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
