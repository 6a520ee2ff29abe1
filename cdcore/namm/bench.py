"""Legacy import path of :func:`distances`, read by NAMM samplers registered before issue 23."""

from cdcore.methods.namm.evaluate import distances

__all__ = ["distances"]
