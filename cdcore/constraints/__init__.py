"""Feasible sets: one definition serves landing, projection, NAMM losses and evaluation."""

from cdcore.constraints.base import (
    Constraint,
    FunctionalConstraint,
    Geometry,
    Projection,
    batched_jacobian,
)
from cdcore.constraints.library import available, make
from cdcore.constraints.sphere import Sphere

# the constraint library: importing a module registers its sets by name
from cdcore.constraints.son import SpecialOrthogonal  # noqa: E402  (registers "son", "so10")
from cdcore.constraints.dipeptide import Dipeptide  # noqa: E402  ("dipeptide")
from cdcore.constraints.robot import RobotArm  # noqa: E402  ("robot_arm", "robot")
from cdcore.constraints.implicit import BumpySphere, ImplicitSurface, TangleCube, Torus  # noqa: E402
from cdcore.constraints.convex import Ball, Box, Polytope, Simplex  # noqa: E402

__all__ = [
    "Constraint",
    "FunctionalConstraint",
    "Geometry",
    "Projection",
    "Sphere",
    "SpecialOrthogonal",
    "Dipeptide",
    "RobotArm",
    "ImplicitSurface",
    "Torus",
    "TangleCube",
    "BumpySphere",
    "Box",
    "Simplex",
    "Ball",
    "Polytope",
    "available",
    "make",
    "batched_jacobian",
]
