"""Train runs and encode them: ``fghash train`` and ``fghash encode`` as library calls."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Encoded", "encode", "speaks_for_the_run", "train_runs"]

PathLike = str | os.PathLike[str]


def speaks_for_the_run() -> bool:
    """Whether this process reports results: always, except under torchrun, where the
    process of rank 0 speaks for all of them."""
    return os.environ.get("RANK", "0") == "0"


def train_runs(
    dataset: str,
    preset: str | None,
    *,
    data_root: str,
    bits: str,
    out: PathLike,
    resume: bool = False,
    **options: Any,
) -> Iterator[Any]:
    """Train one run per code length in ``bits`` (``"12"`` or ``"12,24"``: several give
    ``OUT/bits-K`` subfolders), yielding each :class:`fghash.training.loop.TrainResult`
    as it finishes; under torchrun only the rank-0 process yields.

    ``options`` are :func:`fghash.runs.config.resolve_config`'s overrides (``None`` keeps
    the protocol's value).
    """
    from fghash.runs.config import parse_bits, resolve_config
    from fghash.training.loop import train_many

    lengths = parse_bits(bits)
    cfg = resolve_config(dataset, preset, data_root=data_root, bits=lengths[0], **options)
    for result in train_many(cfg, lengths, out, resume=resume):
        if speaks_for_the_run():
            yield result


@dataclass
class Encoded:
    """The codes file :func:`encode` wrote, and what it holds."""

    path: Path
    bits: int
    sizes: dict[str, int]  # items per split
    skipped: int  # unreadable images left out


def encode(run_dir: PathLike, out: PathLike, **options: Any) -> Encoded:
    """Encode a run's splits into the codes file ``out``
    (:func:`fghash.encoding.encode.encode_run`, ``options`` as it takes them)."""
    from fghash.codes import read_attrs
    from fghash.encoding.encode import encode_run

    path = Path(encode_run(run_dir, out, **options))
    info = read_attrs(path)
    skipped = info["config"].get("encode", {}).get("skipped", {})
    return Encoded(
        path=path,
        bits=int(info["bits"]),
        sizes={name: int(s["n"]) for name, s in sorted(info["splits"].items())},
        skipped=int(sum(skipped.values())),
    )
