"""Resumable output of a long job: numbered parts, each written whole or not at all.

A job (``fghash encode`` of a million images) writes its results part by part into a
folder next to its final output. Each part is an ``.npz`` file written under a temporary
name, flushed to disk and renamed, so after a crash (``kill -9``, power loss) every part
on disk is complete and a part being written is simply missing. ``meta.json`` records
what the job is; resuming with different settings is refused rather than mixing parts of
two jobs. The final output is assembled from the parts, also under a temporary name, and
the folder removed once it is in place.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from fghash.errors import FghashError
from fghash.util.faults import checkpoint

__all__ = ["PartStore", "parts_folder"]

_META = "meta.json"


def parts_folder(out_path: str | os.PathLike[str]) -> Path:
    """The parts folder of the output ``out_path``: ``.<name>.parts`` beside it."""
    out = Path(out_path)
    return out.parent / f".{out.name}.parts"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class PartStore:
    """The parts of one job in ``folder``.

    ``meta``: JSON-able description of the job. A new store creates the folder; an
    existing folder is reused only with ``resume=True`` and the same ``meta``
    (:class:`FghashError` otherwise, naming the folder); ``fresh=True`` deletes it first.
    """

    def __init__(
        self, folder: Path, meta: dict[str, Any], *, resume: bool = False, fresh: bool = False
    ) -> None:
        self.folder = Path(folder)
        text = json.dumps(meta, sort_keys=True, default=str)
        if fresh and self.folder.exists():
            shutil.rmtree(self.folder)
        if self.folder.exists():
            if not resume:
                raise FghashError(
                    f"{self.folder} holds the parts of an interrupted run; pass --resume to "
                    "continue it, or --force to start again."
                )
            try:
                old = (self.folder / _META).read_text(encoding="utf-8")
            except OSError:
                old = None
            if old is None or json.loads(old) != json.loads(text):
                raise FghashError(
                    f"{self.folder} holds parts made with other settings; rerun with the "
                    "settings of the interrupted run, or use --force to start again."
                )
        else:
            self.folder.mkdir(parents=True)
            try:
                self._write_bytes(_META, text.encode("utf-8"))
            except BaseException:
                shutil.rmtree(self.folder, ignore_errors=True)
                raise

    def _atomic(self, filename: str, fill: Callable[[BinaryIO], Any]) -> None:
        """Write ``filename`` in the folder through a temporary file, flushed to disk."""
        tmp = self.folder / f".{filename}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fill(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.folder / filename)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError) and e.filename is None:  # a failed close names no file
                e.filename = str(self.folder / filename)
            raise
        _fsync_dir(self.folder)

    def _write_bytes(self, name: str, data: bytes) -> None:
        self._atomic(name, lambda fh: fh.write(data))

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.npz"

    def has(self, name: str) -> bool:
        """Whether part ``name`` is complete on disk."""
        return self._path(name).is_file()

    def write(self, name: str, **arrays: np.ndarray) -> None:
        """Write part ``name`` (arrays by keyword), atomically."""
        self._atomic(f"{name}.npz", lambda fh: np.savez(fh, **arrays))
        checkpoint("encode:after-part")

    def read(self, name: str) -> dict[str, np.ndarray]:
        """The arrays of part ``name``."""
        with np.load(self._path(name), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def empty(self) -> bool:
        """Whether no part has been written yet."""
        return not any(self.folder.glob("*.npz"))

    def remove(self) -> None:
        """Delete the folder and every part (after the output is in place)."""
        shutil.rmtree(self.folder, ignore_errors=True)
