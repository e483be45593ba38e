"""``fghash search``'s re-ranking options (:mod:`index.rerank`), kept apart from the
command so that its module stays short."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

__all__ = ["rerank_options"]


def rerank_options() -> Callable[[Any], Any]:
    """``--rerank relaxed|features``, ``--oversample X`` and ``--rerank-metric ip|l2``."""
    options = [
        click.option(
            "--rerank",
            type=click.Choice(["relaxed", "features"]),
            help="Re-rank the k*X Hamming nearest by the float vectors the index's codes "
            "file stores (relaxed codes or backbone features); results get a score.",
        ),
        click.option(
            "--oversample",
            type=click.IntRange(1, 1000),
            default=10,
            show_default=True,
            help="With --rerank: X, the Hamming candidates per result.",
        ),
        click.option(
            "--rerank-metric",
            type=click.Choice(["ip", "l2"]),
            default="ip",
            show_default=True,
            help="With --rerank: score by inner product, or by -(L2 distance)^2.",
        ),
    ]

    def apply(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return apply
