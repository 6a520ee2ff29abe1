"""Constraints by name, so params.yaml and stored files can refer to them.

One table knows every set of the library; a name's module is imported only when the set is built, so the
registry needs no import side effects and ``make("burgers")`` works from a fresh process.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from cdcore.constraints.base import Constraint

# name -> (module, factory attribute, default keyword arguments)
_REGISTRY: dict[str, tuple[str, str, dict[str, Any]]] = {
    "sphere": ("cdcore.constraints.sphere", "Sphere", {"dim": 3}),
    "son": ("cdcore.constraints.son", "SpecialOrthogonal", {"n": 10}),
    "so10": ("cdcore.constraints.son", "SpecialOrthogonal", {"n": 10}),
    "dipeptide": ("cdcore.constraints.dipeptide", "Dipeptide", {}),
    "robot_arm": ("cdcore.constraints.robot", "RobotArm", {}),
    "robot": ("cdcore.constraints.robot", "RobotArm", {}),
    "torus": ("cdcore.constraints.implicit", "Torus", {}),
    "tangle_cube": ("cdcore.constraints.implicit", "TangleCube", {}),
    "bumpy_sphere": ("cdcore.constraints.implicit", "BumpySphere", {}),
    "box": ("cdcore.constraints.convex", "Box", {"dim": 2}),
    "simplex": ("cdcore.constraints.convex", "Simplex", {"dim": 3}),
    "ball": ("cdcore.constraints.convex", "Ball", {"dim": 2}),
    "polytope": ("cdcore.constraints.convex", "polytope", {}),
    "burgers": ("cdcore.constraints.images", "BurgersConstraint", {}),
    "kolmogorov": ("cdcore.constraints.images", "kolmogorov", {}),
    "periodic_texture": ("cdcore.constraints.images", "PeriodicConstraint", {}),
    "total_brightness": ("cdcore.constraints.images", "BrightnessConstraint", {}),
    "count": ("cdcore.constraints.images", "CountConstraint", {}),
}


def available() -> list[str]:
    return sorted(_REGISTRY)


def make(name: str, **kwargs: Any) -> Constraint:
    """Build a library constraint; an unknown name lists what exists."""
    try:
        module, attr, defaults = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown constraint {name!r}; available: {', '.join(available())}") from None
    return getattr(importlib.import_module(module), attr)(**{**defaults, **kwargs})


def from_record(attrs: Mapping[str, Any]) -> Constraint:
    """The constraint a data file or model recorded: its library name and constructor arguments (files written
    before the arguments were recorded have none)."""
    return make(attrs["constraint"], **dict(attrs.get("constraint_kwargs") or {}))
