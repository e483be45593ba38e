"""``fghash explain`` as one library call: one codes file explained, or several compared."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fghash.errors import FghashError
from fghash.util.locks import writer_lock
from fghash.util.unfinished import undo_unfinished

__all__ = ["explain_codes"]

PathLike = str | os.PathLike[str]


def explain_codes(
    codes: Sequence[PathLike],
    out: PathLike,
    *,
    run: PathLike | None = None,
    data_root: PathLike | None = None,
    split: str = "database",
    attributes_from: PathLike | None = None,
    device: str = "auto",
    bits_to_show: str | None = None,
    per_bit: int = 8,
    queries: Sequence[int] | None = None,
    num_queries: int = 4,
    k: int = 10,
    rotations: int = 20,
    seed: int = 0,
    force: bool = False,
    command: str | None = None,
    wait: float | None = 0,
) -> dict[str, Any]:
    """Explain one codes file (:func:`fghash.explain.run.explain`: per-bit grids, AUC,
    bit statistics, retrieval examples) or compare several
    (:func:`fghash.explain.compare.compare`: awareness side by side) into ``out``.

    Returns the document written as ``explain.json``; on failure what it wrote in
    ``out`` is removed (:func:`bench.outdir.removing_on_failure`). The writing holds
    ``out``'s writer lock (:func:`fghash.util.locks.writer_lock`, waiting up to ``wait``
    seconds, ``None``: for ever), and a report a killed run left unfinished is undone
    first (:mod:`fghash.util.unfinished`), so it is never taken for a whole one.
    """
    from fghash.explain.inputs import load_input

    if min(per_bit, num_queries, k, rotations) < 1:
        raise FghashError("--per-bit, --num-queries, -k and --rotations must be at least 1.")
    inputs = [
        load_input(
            c,
            split=split,
            run=run,
            data_root=data_root,
            attributes_from=attributes_from,
            device=device,
        )
        for c in codes
    ]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)  # the lock file goes beside out
    with writer_lock(out, wait=wait, what=f"the explain folder {out}"):
        if out.is_dir():
            undo_unfinished(out)
        return _explain_locked(
            inputs,
            out,
            bits_to_show=bits_to_show,
            per_bit=per_bit,
            queries=queries,
            num_queries=num_queries,
            k=k,
            rotations=rotations,
            seed=seed,
            force=force,
            command=command,
        )


def _explain_locked(
    inputs: list[Any],
    out: Path,
    *,
    bits_to_show: str | None,
    per_bit: int,
    queries: Sequence[int] | None,
    num_queries: int,
    k: int,
    rotations: int,
    seed: int,
    force: bool,
    command: str | None,
) -> dict[str, Any]:
    """:func:`explain_codes` once ``out``'s writer lock is held."""
    from bench.outdir import removing_on_failure
    from fghash.explain.compare import compare
    from fghash.explain.run import explain, parse_bits_to_show

    if len(inputs) > 1:
        return removing_on_failure(compare, out)(
            inputs, out, rotations=rotations, seed=seed, force=force, command=command
        )
    inp = inputs[0]
    return removing_on_failure(explain, out)(
        inp,
        out,
        bits_to_show=parse_bits_to_show(bits_to_show, inp.cf.bits),
        per_side=per_bit,
        queries=list(queries) if queries else None,
        num_queries=num_queries,
        k=k,
        rotations=rotations,
        seed=seed,
        force=force,
        command=command,
    )
