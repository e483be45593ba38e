"""Authorised writes: items added through ``fghash add``'s own library call.

Writes are off unless the server was started with ``--allow-writes`` (HTTP 403), and
then need ``Authorization: Bearer <token>`` with the token from ``--token-file``
(compared with :func:`hmac.compare_digest`; HTTP 401 otherwise). New items are written
to a temporary codes file and added by :func:`fghash.ops.indexes.add_items`, so a write
holds the bundle's writer lock, is checksummed and switched in atomically, and a kill at
any point leaves the before or the after state.
"""

from __future__ import annotations

import hmac
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fghash.errors import FghashError

__all__ = [
    "Unauthorized",
    "WritesOff",
    "add_codes",
    "add_images",
    "check_token",
    "read_token",
    "remove_ids",
]

WRITE_WAIT_S = 30.0  # how long a write waits for another writer of the same bundle


class WritesOff(FghashError):
    """Writes were not enabled (HTTP 403)."""


class Unauthorized(FghashError):
    """No or a wrong bearer token (HTTP 401)."""


def read_token(path: str | os.PathLike[str]) -> str:
    """The token in ``path`` (surrounding white space dropped); an empty file is refused."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeError) as e:
        raise FghashError(f"cannot read the token file {path}: {e}.") from None
    if len(token) < 8:
        raise FghashError(
            f"the token file {path} holds fewer than 8 characters; use a longer token."
        )
    return token


def check_token(token: str | None, authorization: str | None) -> None:
    """Refuse the request unless writes are on and it carries the right bearer token."""
    if token is None:
        raise WritesOff("writes are off; start the server with --allow-writes --token-file FILE.")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("this write needs the header 'Authorization: Bearer <token>'.")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized("the bearer token is not the server's.")


def add_codes(
    bundle: Path,
    bits: int,
    codes: np.ndarray,
    ids: Sequence[int],
    labels: Sequence[Any] | None,
    paths: Sequence[str] | None,
) -> Any:
    """Add packed ``codes`` with their ids (labels, paths) as ``fghash add BUNDLE NEW.h5``."""
    from fghash.codes import CodesFile, Split, write_codes
    from fghash.ops.indexes import add_items

    n = codes.shape[0]
    for what, values in (("ids", ids), ("labels", labels), ("paths", paths)):
        if values is not None and len(values) != n:
            raise FghashError(f"the request has {n} codes but {len(values)} {what}.")
    split = Split(
        codes=codes,
        ids=np.asarray(ids, dtype=np.int64),
        labels=None if labels is None else np.asarray(labels),
        paths=None if paths is None else [str(p) for p in paths],
    )
    with tempfile.TemporaryDirectory(prefix="fghash-serve-add-") as tmp:
        new = Path(tmp) / "new.h5"
        write_codes(new, CodesFile(bits=bits, splits={"database": split}))
        return add_items(bundle, new, wait=WRITE_WAIT_S)


def add_images(
    bundle: Path,
    run: Path,
    uploads: Sequence[tuple[str, bytes]],
    label: int | None,
    first_id: int | None,
    device: str,
) -> Any:
    """Add uploaded images encoded by ``run`` as ``fghash add BUNDLE --run RUN --images``.
    Their paths are the uploaded file names."""
    from fghash.ops.indexes import add_items

    with tempfile.TemporaryDirectory(prefix="fghash-serve-add-") as tmp:
        files = []
        for i, (name, data) in enumerate(uploads):
            p = Path(tmp) / f"{i:06d}-{Path(name).name or 'upload'}"
            p.write_bytes(data)
            files.append(p)
        return add_items(
            bundle, run=run, images=files, label=label, first_id=first_id, device=device,
            wait=WRITE_WAIT_S,
        )  # fmt: skip


def remove_ids(bundle: Path, ids: Sequence[int]) -> Any:
    """Remove items by id through ``fghash remove``'s library call (the same guarantees)."""
    from fghash.ops.indexes import remove_items

    return remove_items(bundle, list(ids), wait=WRITE_WAIT_S)
