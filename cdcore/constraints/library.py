"""Constraints by name, so params.yaml and stored files can refer to them."""

from __future__ import annotations

from typing import Any, Callable

from cdcore.constraints.base import Constraint
from cdcore.constraints.sphere import Sphere

_REGISTRY: dict[str, Callable[..., Constraint]] = {
    "sphere": lambda dim=3, **kw: Sphere(dim=dim, **kw),
}


def register(name: str, factory: Callable[..., Constraint]) -> None:
    """Add a constraint to the library (used by modules that define new sets)."""
    _REGISTRY[name] = factory


def available() -> list[str]:
    return sorted(_REGISTRY)


def make(name: str, **kwargs: Any) -> Constraint:
    """Build a library constraint; an unknown name lists what exists."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown constraint {name!r}; available: {', '.join(available())}") from None
    return factory(**kwargs)
