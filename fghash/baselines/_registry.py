"""Baselines by name: ``register_baseline`` adds a class, ``create_baseline`` builds one.

Like timm's model registry: the CLI's ``METHOD`` choices come from :data:`BASELINES`,
and ``create_baseline`` drops ``None`` keyword arguments so an unset CLI option never
overrides a method's own default.
"""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

from fghash.errors import FghashError

__all__ = ["BASELINES", "register_baseline", "get_baseline", "create_baseline", "list_baselines"]

BASELINES: dict[str, type] = {}

T = TypeVar("T", bound=type)


def register_baseline(cls: T) -> T:
    """Class decorator: add ``cls`` to :data:`BASELINES` under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not name or not isinstance(name, str):
        raise TypeError(f"{cls.__name__} needs a class attribute `name` to be registered.")
    if name in BASELINES and BASELINES[name] is not cls:
        raise TypeError(
            f"baseline name {name!r} is already registered by {BASELINES[name].__name__}."
        )
    BASELINES[name] = cls
    return cls


def list_baselines() -> list[str]:
    """Registered method names, sorted."""
    return sorted(BASELINES)


def get_baseline(name: str) -> type:
    """The class registered as ``name`` (case-insensitive)."""
    key = str(name).lower()
    if key not in BASELINES:
        raise FghashError(
            f"unknown baseline method {name!r}; choose one of {', '.join(list_baselines())}."
        )
    return BASELINES[key]


def create_baseline(name: str, bits: int, **kw: Any) -> Any:
    """Build the (unfitted) baseline ``name`` for ``bits``-bit codes; ``None`` kwargs are dropped."""
    cls = get_baseline(name)
    kw = {k: v for k, v in kw.items() if v is not None}
    accepted = set(inspect.signature(cls).parameters) - {"bits"}
    unknown = sorted(set(kw) - accepted)
    if unknown:
        raise FghashError(
            f"baseline {cls.name!r} has no parameter {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(accepted)) or 'none'}."
        )
    return cls(bits, **kw)
