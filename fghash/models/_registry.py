"""Model registry in the timm style: variants register by name, ``create_model`` builds them.

A variant function holds only hyper-parameters and returns a module. ``create_model``
drops ``None`` keyword arguments first, so a CLI option left at ``None`` never overrides
a variant's own default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fghash.errors import FghashError

__all__ = ["register_model", "create_model", "list_models", "is_model"]

_MODELS: dict[str, Callable[..., Any]] = {}

F = TypeVar("F", bound=Callable[..., Any])


def register_model(fn: F) -> F:
    """Decorator: register ``fn`` under its ``__name__`` (one name, one variant)."""
    name = fn.__name__
    if name in _MODELS:
        raise RuntimeError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_MODELS)


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    return name in _MODELS


def create_model(name: str, **kwargs: Any) -> Any:
    """Build the registered model ``name``; keyword arguments that are ``None`` are dropped.

    The returned module has ``model_name`` set to ``name`` so a run can record which
    variant built it next to ``model.config``.
    """
    if name not in _MODELS:
        raise FghashError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}.")
    args = {k: v for k, v in kwargs.items() if v is not None}
    model = _MODELS[name](**args)
    model.model_name = name
    return model
