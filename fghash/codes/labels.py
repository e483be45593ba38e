"""Labels as people read them: one formatter for the search table and the retrieval sheet."""

from __future__ import annotations

from typing import Any

__all__ = ["format_label"]


def format_label(label: Any) -> str:
    """A result's label for people: ``-`` when absent, multi-hot labels comma-separated."""
    if label is None:
        return "-"
    if isinstance(label, list):
        return ",".join(map(str, label)) or "-"
    return str(label)
