"""Images in and out: uploaded query images, and item image files from the data root.

Uploads are checked with Pillow (a non-image or truncated file is one sentence, before
any network is loaded) and encoded by the bundle's run with the evaluation transform, as
``fghash search --image`` does (:mod:`fghash.encoding.image_query`); torch is imported
by the first image request, never at start-up. Item images are served only from under a
data root: a path that resolves outside it (``../``, an absolute path, a symlink out) is
refused.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fghash.errors import FghashError

__all__ = ["Encoders", "Forbidden", "ItemImageMissing", "check_upload", "confined_path"]

IMAGE_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".webp": "image/webp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}


class Forbidden(FghashError):
    """A path outside the data root (HTTP 403)."""


class ItemImageMissing(FghashError):
    """The item has no image file to serve (HTTP 404)."""


def check_upload(name: str, data: bytes) -> None:
    """Refuse an upload Pillow cannot decode completely (not an image, truncated, or
    declaring more pixels than :data:`fghash.data.base.MAX_IMAGE_PIXELS`)."""
    from PIL import Image

    from fghash.data.base import MAX_IMAGE_PIXELS

    if not data:
        raise FghashError(f"the upload {name!r} is empty.")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise FghashError(
                    f"the upload {name!r} declares {im.width}x{im.height} pixels, more than "
                    f"the {MAX_IMAGE_PIXELS} this server decodes."
                )
            im.load()
    except FghashError:
        raise
    except Exception:  # Pillow raises many types for bad bytes
        raise FghashError(
            f"the upload {name!r} is not an image Pillow can read (or it is truncated)."
        ) from None


class Encoders:
    """Trained runs' encoders, each loaded once (the first image request imports torch)."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = {"gpu": "cuda"}.get(device, device)
        self._encoders: dict[Path, Any] = {}
        self._lock = threading.Lock()

    def encode(self, uploads: Sequence[tuple[str, bytes]], run: Path, bits: int) -> np.ndarray:
        """Packed codes of the uploaded images (each checked by :func:`check_upload`)."""
        with self._lock:  # one model, one forward at a time
            enc = self._encoders.get(run)
            if enc is None:
                from fghash.encoding.encode import load

                enc = self._encoders[run] = load(run, device=self.device)
            if enc.bits != bits:
                raise FghashError(
                    f"the run {run} makes {enc.bits}-bit codes but the index holds {bits}-bit "
                    "codes."
                )
            with tempfile.TemporaryDirectory(prefix="fghash-serve-") as tmp:
                paths = []
                for i, (name, data) in enumerate(uploads):
                    suffix = Path(name).suffix.lower()
                    p = Path(tmp) / f"{i}{suffix if suffix in IMAGE_TYPES else ''}"
                    p.write_bytes(data)
                    paths.append(str(p))
                return enc.encode(paths)


def confined_path(root: str | os.PathLike[str] | None, path: str | None) -> Path:
    """The file ``path`` names under ``root``, refused unless it resolves inside ``root``.

    ``path`` is an item's recorded path, relative to the data root. An absolute path,
    ``..`` components, or symlinks that lead out of ``root`` raise :class:`Forbidden`;
    no data root or no such file raises :class:`ItemImageMissing`.
    """
    if path is None or path == "":
        raise ItemImageMissing("this item has no image path.")
    if root is None:
        raise ItemImageMissing(
            "no data root is known for this index; start the server with --data-root."
        )
    if os.path.isabs(path) or "\x00" in path:
        raise Forbidden(
            "the item's image path is absolute; only paths under the data root are served."
        )
    if ".." in Path(path).parts:
        raise Forbidden("the item's image path leaves the data root (..); it is not served.")
    base = Path(root).resolve()
    target = (base / path).resolve()
    if target != base and base not in target.parents:
        raise Forbidden("the item's image path resolves outside the data root; it is not served.")
    if not target.is_file():
        raise ItemImageMissing("the item's image file is not there.")
    return target


def media_type(path: Path) -> str:
    """The content type of an image file, by its suffix."""
    return IMAGE_TYPES.get(path.suffix.lower(), "application/octet-stream")
