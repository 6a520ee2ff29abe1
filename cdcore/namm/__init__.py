"""Neural approximate mirror maps (NAMM, Feng et al. ICLR 2025): benchmarks, nets, losses and fitting.

Importing this package registers the five benchmark constraints in the constraint library.
"""

from cdcore.namm import problems  # noqa: F401  (registers burgers, kolmogorov, periodic_texture, total_brightness, count)
from cdcore.namm.problems import GENERATORS, ProblemData, make_problem

__all__ = ["GENERATORS", "ProblemData", "make_problem", "problems"]
