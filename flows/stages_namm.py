"""Legacy import path: NAMM samplers registered before issue 23 read ``load_sampler`` and ``draw`` from here
(MLflow keeps each model's logged code, and that code imports this module)."""

from cdcore.methods.namm.io import draw, load_sampler

__all__ = ["draw", "load_sampler"]
