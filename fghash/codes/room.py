"""Room on disk set aside before HDF5 writes, so a full disk is one clean error.

HDF5 defers much of a file's writing (chunk cache, metadata cache) to ``flush`` and
``close``. When the disk fills up then, closing fails half way, the library's handle is
left in a state where the next attempt (h5py's destructor, or HDF5's own clean-up at
exit) crashes the interpreter with a segmentation fault. :class:`Room` avoids getting
there: before each step that makes HDF5 allocate, the writer asks for an upper bound of
the bytes that step can add (:func:`dataset_bytes`, :func:`strings_bytes`), and
:meth:`Room.take` allocates them in the file with ``fallocate(FALLOC_FL_KEEP_SIZE)``
(blocks set aside past the end, file size unchanged). A disk without that room fails
there, as an ordinary :class:`OSError` (``ENOSPC``) while HDF5 has nothing pending
outside the room already set aside, so the file closes cleanly and the caller's
temporary file is removed. :meth:`Room.release` gives the unused blocks back after a
successful close.

Where ``fallocate`` is not supported (not Linux, some network file systems), the free
space the file system reports is checked instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Room", "dataset_bytes", "h5_file", "open_h5", "strings_bytes"]

_KEEP_SIZE = 0x01  # FALLOC_FL_KEEP_SIZE
_BASE = 16 << 10  # superblock, root group, file attributes: several times their size
_PER_TAKE = 4 << 10  # object headers and index nodes a step may add


def _fallocate() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.fallocate64
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


_FALLOCATE = _fallocate()


def dataset_bytes(
    shape: tuple[int, ...], itemsize: int, chunks: tuple[int, ...] | None = None
) -> int:
    """Upper bound of the bytes a numeric dataset of ``shape`` takes in a file: stored in
    ``chunks`` (whole chunks, the edge ones too, and their index) or contiguous (None)."""
    shape = tuple(int(s) for s in shape)
    if chunks is None or not shape or shape[0] == 0:
        return int(np.prod(shape, dtype=np.int64)) * itemsize + 4096
    n_chunks = -(-shape[0] // int(chunks[0]))
    per_chunk = int(np.prod(chunks, dtype=np.int64)) * itemsize
    return n_chunks * (per_chunk + 96) + 4096


def strings_bytes(strings: Iterable[str | bytes]) -> int:
    """Upper bound of the bytes variable-length UTF-8 strings take: one 16-byte reference
    each in the dataset, and each string, padded and with its header, in a global heap."""
    total, n = 0, 0
    for s in strings:
        b = s if isinstance(s, bytes) else str(s).encode("utf-8", "surrogateescape")
        total += (len(b) + 7) // 8 * 8 + 32
        n += 1
    return n * 16 + total + total // 4 + 8192


class Room:
    """Disk blocks set aside in the HDF5 file ``path`` (open in ``f``) ahead of HDF5."""

    def __init__(self, f: Any, path: str | os.PathLike[str]) -> None:
        self.f, self.path = f, Path(path)
        self.end = 0  # every byte below it is set aside or written
        self.supported = _FALLOCATE is not None

    def take(self, nbytes: int) -> None:
        """Set aside ``nbytes`` (plus a margin) past what the file holds or was given so
        far; raise :class:`OSError` (``ENOSPC``) when the disk has not that room."""
        eoa = int(self.f.id.get_filesize())
        start = self.end
        self.end = max(self.end, eoa) + int(nbytes) + int(nbytes) // 16 + _PER_TAKE
        if self.supported:
            fd = os.open(self.path, os.O_RDWR)
            try:
                if _FALLOCATE(fd, _KEEP_SIZE, start, self.end - start) == 0:
                    return
                code = ctypes.get_errno()
            finally:
                os.close(fd)
            if code not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise OSError(code, os.strerror(code), str(self.path))
            self.supported = False
        if shutil.disk_usage(self.path.parent).free < self.end - eoa:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    def release(self) -> None:
        """Give back the blocks set aside past the end of the closed file (a truncation
        one byte up and back frees them on every Linux file system)."""
        if not self.supported or self.end == 0:
            return
        try:
            size = os.path.getsize(self.path)
            if size < self.end:
                os.truncate(self.path, size + 1)
                os.truncate(self.path, size)
        except OSError:
            pass


def open_h5(path: str | os.PathLike[str], mode: str = "w", nbytes: int = 0) -> tuple[Any, Room]:
    """The HDF5 file at ``path`` opened in ``mode`` (``"w"``: new, replaced if there;
    ``"r+"``: to add to) with room for ``nbytes`` set aside before anything is written,
    and its :class:`Room` for later steps. Close the file, then :meth:`Room.release`."""
    import h5py

    f = h5py.File(path, mode)
    room = Room(f, path)
    try:
        room.take(_BASE + nbytes)
    except BaseException:
        f.close()
        raise
    return f, room


@contextmanager
def h5_file(
    path: str | os.PathLike[str], mode: str = "w", nbytes: int = 0
) -> Iterator[tuple[Any, Room]]:
    """:func:`open_h5` as a context manager: the file is closed on leaving, also after an
    error (the caller removes it then, e.g. through ``atomic_path``); the unused room is
    given back after a clean close."""
    f, room = open_h5(path, mode, nbytes)
    try:
        yield f, room
    finally:
        f.close()
    room.release()
