"""The one parser of comma-separated lists (``1,10,100``, ``flat,ivf``) on every front.

Empty items are skipped (``1,,2`` and a trailing comma are forgiven); an item that does
not convert makes one sentence naming the option and an example. Ranges (``0,3,5-7``)
and code lengths have their own parsers, which say what they accept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fghash.errors import FghashError

__all__ = ["parse_list"]

T = TypeVar("T")


def parse_list(
    text: str,
    convert: Callable[[str], T] = int,  # type: ignore[assignment]
    *,
    what: str = "integers",
    example: str = "1,10,100",
) -> list[T]:
    """``"1, 10,100"`` → ``[1, 10, 100]``: split at commas, strip, convert each item.

    Raises :class:`FghashError` ("expected comma-separated <what> such as <example>, got
    ...") when an item does not convert.
    """
    try:
        return [convert(t.strip()) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise FghashError(
            f"expected comma-separated {what} such as {example}, got {text!r}."
        ) from None
