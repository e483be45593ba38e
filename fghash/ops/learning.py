"""Train runs and encode them: ``fghash train`` and ``fghash encode`` as library calls."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Encoded", "encode", "speaks_for_the_run", "train_runs"]

PathLike = str | os.PathLike[str]


def speaks_for_the_run() -> bool:
    """Whether this process reports results: always, except under torchrun, where the
    process of rank 0 speaks for all of them."""
    return os.environ.get("RANK", "0") == "0"


def _run_lock(folder: Path, wait: float | None) -> AbstractContextManager[Any]:
    """The writer lock of a run folder; under torchrun only rank 0 takes it (the ranks
    train one run together: they are one writer)."""
    from fghash.util.locks import writer_lock

    if not speaks_for_the_run():
        return nullcontext()
    folder.parent.mkdir(parents=True, exist_ok=True)  # the lock file goes beside it
    return writer_lock(folder, wait=wait, what=f"the run folder {folder}")


def train_runs(
    dataset: str,
    preset: str | None,
    *,
    data_root: str,
    bits: str,
    out: PathLike,
    resume: bool = False,
    wait: float | None = 0,
    **options: Any,
) -> Iterator[Any]:
    """Train one run per code length in ``bits`` (``"12"`` or ``"12,24"``: several give
    ``OUT/bits-K`` subfolders), yielding each :class:`fghash.training.loop.TrainResult`
    as it finishes; under torchrun only the rank-0 process yields.

    ``options`` are :func:`fghash.runs.config.resolve_config`'s overrides (``None`` keeps
    the protocol's value). The training holds the writer lock of ``out`` (and of each
    ``OUT/bits-K`` while it trains), waiting up to ``wait`` seconds for another writer
    (``None``: for ever); the "already trained / nothing to resume" checks of
    :func:`fghash.training.loop.train` run once it is held, so a second train or resume
    into a run folder being trained waits or stops with one sentence.
    """
    from fghash.runs.config import TrainConfig, parse_bits, resolve_config
    from fghash.runs.folder import bits_folder
    from fghash.training.loop import train

    lengths = parse_bits(bits)
    cfg = resolve_config(dataset, preset, data_root=data_root, bits=lengths[0], **options)
    out = Path(out)
    with _run_lock(out, wait):
        for b in lengths:
            one = TrainConfig.from_dict({**cfg.to_dict(), "bits": b})
            target = out if len(lengths) == 1 else bits_folder(out, b)
            with nullcontext() if target == out else _run_lock(target, wait):
                result = train(one, target, resume=resume)
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
