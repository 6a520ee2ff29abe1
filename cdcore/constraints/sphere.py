"""The unit sphere S^{d-1} = {x : ||x|| - 1 = 0}, with analytic Jacobian."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from cdcore.constraints.base import Constraint


class Sphere(Constraint):
    """h(x) = ||x|| − r (as in the landing code), so |h| is the distance to Σ."""

    name = "sphere"

    def __init__(self, dim: int = 3, radius: float = 1.0, delta: float = 1e-6) -> None:
        super().__init__(dim, n_eq=1, n_ineq=0, delta=delta)
        self.radius = radius

    def h(self, x: Tensor) -> Tensor:
        return x.norm(dim=1, keepdim=True) - self.radius

    def h_jac(self, x: Tensor) -> Tensor:
        return (x / x.norm(dim=1, keepdim=True)).unsqueeze(1)

    def sample_prior(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
        """Uniform on the sphere: a normalised Gaussian."""
        z = torch.randn(n, self.dim, generator=generator, device=device)
        return self.radius * z / z.norm(dim=1, keepdim=True)

    def spec(self) -> dict:
        return {**super().spec(), "radius": self.radius}
