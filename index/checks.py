"""Integrity and provenance of index bundles.

* :func:`file_record` / :func:`check_index_file`: ``index.json`` records the size, the
  first bytes (the FAISS header: index type, width, item count) and the SHA-256 of
  ``index.faiss``. Every load compares size and header (a truncated or replaced file
  fails at once); the full SHA-256 is compared on request (``--verify``) and, because it
  costs little there, always for files up to :data:`AUTO_VERIFY_BYTES`.
* :func:`codes_origin` / :func:`provenance_warning`: where a codes file came from (the
  run folder it was encoded from, else a digest of its config), so that searching an
  index with queries of another method or run says so. New queries encoded from the
  same run are normal and pass silently.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from fghash.codes import file_checksum
from fghash.errors import FghashError

__all__ = [
    "AUTO_VERIFY_BYTES",
    "HEAD_BYTES",
    "file_record",
    "check_index_file",
    "codes_origin",
    "provenance_warning",
]

HEAD_BYTES = 64  # FAISS binary headers (fourcc, d, code_size, ntotal, ...) fit in 64 bytes
AUTO_VERIFY_BYTES = 64 << 20  # below this, the full SHA-256 is checked on every load


def _sha256(path: Path) -> str:
    return file_checksum(path).removeprefix("sha256:")


def file_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"size", "head", "sha256"}`` of a freshly written ``index.faiss``."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    return {"size": path.stat().st_size, "head": head.hex(), "sha256": _sha256(path)}


def check_index_file(
    path: str | os.PathLike[str], record: dict[str, Any] | None, *, verify: bool | None = None
) -> str:
    """Compare ``index.faiss`` at ``path`` with its ``record`` from ``index.json``.

    ``verify``: True always compares the SHA-256, False never, None (default) when the
    file is at most :data:`AUTO_VERIFY_BYTES`. Returns what was checked (``"size and
    header"``, ``"SHA-256"``, or ``"nothing recorded"`` for a bundle of an older fghash);
    raises :class:`FghashError` naming the file when it does not match.
    """
    path = Path(path)
    if not isinstance(record, dict) or "size" not in record:
        return "nothing recorded (bundle written by an older fghash)"
    damaged = "; the bundle is damaged, rebuild it with 'fghash build-index --force'."
    size = path.stat().st_size
    if size != int(record["size"]):
        raise FghashError(
            f"{path} is {size:,} bytes but index.json records {int(record['size']):,} "
            f"(truncated or replaced){damaged}"
        )
    head = record.get("head")
    if head is not None:
        with open(path, "rb") as fh:
            got = fh.read(len(head) // 2).hex()
        if got != head:
            raise FghashError(f"{path} does not start with the FAISS header recorded{damaged}")
    if verify is None:
        verify = size <= AUTO_VERIFY_BYTES
    if not verify or "sha256" not in record:
        return "size and header"
    if _sha256(path) != record["sha256"]:
        raise FghashError(
            f"{path} does not match the SHA-256 recorded in index.json (its bytes changed){damaged}"
        )
    return "SHA-256"


def codes_origin(config: dict[str, Any] | None) -> str | None:
    """What made a codes file: its run folder (``config.encode.run_dir``), else a digest
    of its config, else None."""
    if not config:
        return None
    enc = config.get("encode")
    if isinstance(enc, dict) and enc.get("run_dir"):
        return "run " + str(Path(enc["run_dir"]).resolve())
    text = json.dumps(config, sort_keys=True, default=str)
    return "config " + hashlib.sha256(text.encode()).hexdigest()[:16]


def provenance_warning(
    source: dict[str, Any] | None,
    codes_path: str | os.PathLike[str],
    method: str | None,
    config: dict[str, Any] | None,
    bundle: str | os.PathLike[str],
) -> str | None:
    """A warning when query codes come from another method or run than the index, else None."""
    if not source:
        return None
    built_from = source.get("path", "?")
    if str(Path(codes_path).resolve()) == built_from:
        return None
    known = {None, "", "unknown"}
    if method not in known and source.get("method") not in known and method != source["method"]:
        return (
            f"the queries in {codes_path} are {method} codes but the index {bundle} holds "
            f"{source['method']} codes from {built_from}; distances between codes of "
            "different methods mean nothing."
        )
    mine, theirs = codes_origin(config), source.get("origin")
    if mine is not None and theirs is not None and mine != theirs:
        return (
            f"the queries in {codes_path} come from another {method or 'training'} run than "
            f"the index {bundle} (built from {built_from}); codes of different runs are not "
            "comparable."
        )
    return None
