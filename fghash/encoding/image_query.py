"""Images as search queries: encode them with the run that made an index's codes.

``fghash search INDEX --image a.jpg`` needs the trained network of the index's codes:
``--run`` names it, or the index bundle records it (``index.json`` → ``codes.run``, set
when the codes file came from ``fghash encode``). The images get the run's evaluation
transform (:meth:`fghash.encoding.encoder.HashEncoder.encode`). torch is imported only here, and
only when images are given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fghash.errors import FghashError

__all__ = ["query_run", "encode_query_images"]


def query_run(run: str | os.PathLike[str] | None, bundle_meta: dict[str, Any], bundle: Any) -> Path:
    """The run folder to encode query images with: ``run``, else the one the bundle records."""
    recorded = (bundle_meta.get("codes") or {}).get("run")
    if run is None and not recorded:
        raise FghashError(
            f"the index {bundle} does not record the run that made its codes; pass --run RUN "
            "(the fghash train folder)."
        )
    path = Path(run if run is not None else recorded)
    if not path.is_dir():
        where = "--run" if run is not None else f"the run recorded in {bundle}"
        raise FghashError(f"{where} ({path}) is not a folder here; pass --run RUN.")
    return path


def encode_query_images(
    images: Sequence[str | os.PathLike[str]],
    run: Path,
    bits: int,
    device: str = "auto",
    floats: str | None = None,
) -> Any:
    """Packed codes ``uint8 [len(images), ceil(bits/8)]`` of the images, by ``run``'s network.

    With ``floats`` (``"relaxed"`` or ``"features"``, for ``fghash search --rerank``)
    returns ``(codes, vectors)``: also the relaxed codes or the backbone features.

    Refuses a run whose code length differs from the index's ``bits``, and, before the
    network is loaded, an image declaring more than
    :data:`fghash.data.base.MAX_IMAGE_PIXELS` pixels.
    """
    from fghash.codes import signs_to_codes
    from fghash.data.base import check_image_size
    from fghash.encoding.encode import load

    for p in images:
        check_image_size(p)

    enc = load(run, device=device)
    if enc.bits != bits:
        raise FghashError(
            f"the run {run} makes {enc.bits}-bit codes but the index holds {bits}-bit codes; "
            "pass the --run that made the index."
        )
    paths = [str(p) for p in images]
    if floats is None:
        return enc.encode(paths)
    if floats == "relaxed":
        relaxed = enc.encode_relaxed(paths)
        return signs_to_codes(relaxed), relaxed
    return enc.encode(paths), enc.features(paths)
