"""Rewrite a bundle and its codes file together: the common path of ``add`` and ``remove``.

:func:`rewrite` runs inside the bundle's writer lock. It takes the codes file's writer
lock, checks the codes file is the one the bundle was built from (present, same SHA-256,
same row count), writes the new codes file beside it and the new bundle beside the
bundle, and switches both with :func:`index.snapshot.commit`, whose journal lets the
next command finish the switch if this one dies. A failure before the journal leaves
both as they were and removes what was written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fghash.codes import file_checksum, read_attrs
from fghash.errors import FghashError
from fghash.util.atomic import temp_prefix
from fghash.util.faults import checkpoint
from fghash.util.locks import writer_lock
from index.folder import new_folder, read_bundle_meta
from index.snapshot import Change, commit, journal_path, recover

__all__ = ["rewrite"]


def rewrite(
    bundle: Path,
    source: dict[str, Any],
    ntotal: int,
    *,
    update_codes: bool,
    wait: float | None,
    step: str,
    write_codes: Callable[[Path, Path], Any],
    write_bundle: Callable[[Path], None],
    redo: dict[str, Any] | None = None,
) -> Path | None:
    """Write the new versions and switch them in; return the codes file rewritten (or None).

    ``source`` is the bundle's ``codes`` record (its ``checksum`` is updated here);
    ``ntotal`` the bundle's current item count; ``write_codes(path, out)`` writes the new
    codes file at ``out`` from the one at ``path``; ``write_bundle(tmp)`` the new bundle
    into the empty folder ``tmp``. ``step`` names the crash points (``<step>:codes-written``,
    ``<step>:bundle-written``). Without ``update_codes`` only the bundle is rewritten.
    ``redo``: a change outside the files, as :class:`index.snapshot.Change` takes it.
    """
    recorded = source.get("path") if update_codes else None
    if not update_codes:
        _switch(bundle, source, None, step, write_codes, write_bundle, redo)
        return None
    if not recorded or not Path(recorded).parent.is_dir():
        _source_codes(source, bundle, ntotal, step)  # raises: the file is not there
    # the codes file is checked once its lock is held: encode --force may replace it
    with writer_lock(recorded, wait=wait, what=f"the codes file {recorded}"):
        codes_path = _source_codes(source, bundle, ntotal, step)
        _switch(bundle, source, codes_path, step, write_codes, write_bundle, redo)
    return codes_path


def _switch(
    bundle: Path,
    source: dict[str, Any],
    codes_path: Path | None,
    step: str,
    write_codes: Callable[[Path, Path], Any],
    write_bundle: Callable[[Path], None],
    redo: dict[str, Any] | None,
) -> None:
    codes_new: Path | None = None
    try:
        if codes_path is not None:
            codes_new = _beside(codes_path)
            write_codes(codes_path, codes_new)
            checkpoint(f"{step}:codes-written")
            source["checksum"] = file_checksum(codes_new)
        with new_folder(bundle) as tmp:
            write_bundle(tmp)
        checkpoint(f"{step}:bundle-written")
        change = Change(
            bundle=str(bundle.absolute()),
            bundle_new=str(tmp.absolute()),
            revision=read_bundle_meta(tmp)["revision"],
            codes=None if codes_path is None else str(codes_path.absolute()),
            codes_new=None if codes_new is None else str(codes_new.absolute()),
            redo=redo,
        )
    except BaseException:
        if codes_new is not None:
            codes_new.unlink(missing_ok=True)
        raise
    try:
        commit(change)
    except BaseException:
        if not journal_path(bundle).exists():  # the journal was never written: nothing moved
            shutil.rmtree(tmp, ignore_errors=True)
            if codes_new is not None:
                codes_new.unlink(missing_ok=True)
        else:
            recover(bundle)  # both new versions are whole: finish what was begun
        raise


def _beside(path: Path) -> Path:
    """A free temporary name beside ``path`` that a later command removes if we die."""
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    return Path(tmp)


def _source_codes(source: dict[str, Any], bundle: Path, ntotal: int, step: str) -> Path:
    only = f"pass --no-codes-file to {step} {'to' if step == 'add' else 'from'} the index only"
    path = source.get("path")
    if not path or not Path(path).is_file():
        raise FghashError(
            f"the codes file {bundle} was built from ({path or 'not recorded'}) is not there; "
            f"{only}."
        )
    p = Path(path)
    if source.get("checksum") and file_checksum(p) != source["checksum"]:
        raise FghashError(
            f"{p} changed since {bundle} was built from it (checksum differs); rebuild the "
            f"index, or {only}."
        )
    split = source.get("split", "database")
    n = read_attrs(p)["splits"].get(split, {}).get("n")
    if n != ntotal:
        raise FghashError(
            f"{p} holds {n} items in split {split!r} but {bundle} holds {ntotal}; they are out "
            f"of step (an earlier --no-codes-file?): {only}, or rebuild."
        )
    return p
