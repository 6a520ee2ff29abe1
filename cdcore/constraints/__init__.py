"""Feasible sets: one definition serves landing, projection, NAMM losses and evaluation."""

from cdcore.constraints.base import (
    Constraint,
    FunctionalConstraint,
    Geometry,
    Projection,
    batched_jacobian,
)
from cdcore.constraints.library import available, from_record, make
from cdcore.constraints.sphere import Sphere

from cdcore.constraints.son import SpecialOrthogonal
from cdcore.constraints.dipeptide import Dipeptide
from cdcore.constraints.robot import RobotArm
from cdcore.constraints.implicit import BumpySphere, ImplicitSurface, TangleCube, Torus
from cdcore.constraints.convex import Ball, Box, Polytope, Simplex
from cdcore.constraints.images import (BrightnessConstraint, BurgersConstraint, CountConstraint, ImageConstraint,
                                       KolmogorovConstraint, PeriodicConstraint)

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
    "ImageConstraint",
    "BurgersConstraint",
    "KolmogorovConstraint",
    "PeriodicConstraint",
    "BrightnessConstraint",
    "CountConstraint",
    "available",
    "from_record",
    "make",
    "batched_jacobian",
]
