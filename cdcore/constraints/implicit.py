"""Nonconvex implicit surfaces in R³ (one scalar equality each), with synthetic densities.

Offline stand-ins for the landing paper's learned-SDF meshes (bunny, spot):

- ``Torus``: h = sqrt((ρ − R)² + z²) − r, ρ = ‖(x, y)‖ — the signed distance, so
  ‖∇h‖ = 1 on the surface (R = 1, r = 0.4); singular only on the core circle and the z axis.
- ``TangleCube``: Goursat's h = x⁴ − 5x² + y⁴ − 5y² + z⁴ − 5z² + 11.8 (genus 5; the
  critical values of the polynomial are 11.8, 5.55, −0.7, −6.95, none 0, so ∇h ≠ 0 on Σ).
- ``BumpySphere``: h = ‖x‖ − 1 − a·Y(x/‖x‖) with a real spherical harmonic Y scaled to
  max |Y| = 1 ("xyz": 3√3·u_x u_y u_z, degree 3; "z2": (3u_z² − 1)/2, degree 2).

Each has ``sample_prior`` (Gaussian points Newton-projected with the base-class
``project``, non-converged redrawn) and ``sample_density(n, seed)``: a fixed
non-uniform density on the surface (von Mises–Fisher-like bumps around a few
centre directions, reweighting an approximately uniform surface sample).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from cdcore.constraints.base import Constraint


class ImplicitSurface(Constraint):
    """A surface {x ∈ R³ : h(x) = 0}; subclasses give ``h`` and the proposal scale."""

    name = "implicit"
    proposal_scale: float = 1.0
    # default bump centres (directions) and weights for the synthetic density
    density_centres = ((1.0, 1.0, 1.0), (-1.0, 0.5, -0.5), (0.0, -1.0, 0.8))
    density_weights = (0.5, 0.3, 0.2)

    def __init__(self, eps: float = 0.1, delta: float = 1e-6) -> None:
        super().__init__(3, n_eq=1, n_ineq=0, eps=eps, delta=delta)

    def _proposal(self, k: int, generator: Optional[torch.Generator], device) -> Tensor:
        return self.proposal_scale * torch.randn(k, 3, generator=generator, device=device, dtype=torch.float64)

    def _surface_points(
        self, n: int, generator: Optional[torch.Generator], device, tol: float = 1e-9, max_rounds: int = 50
    ) -> Tensor:
        """Gaussian proposals Newton-projected onto Σ (float64); non-converged redrawn."""
        return self.projected_draws(
            lambda k: self._proposal(k, generator, device), n, tol=tol, max_iter=50, min_batch=16, max_rounds=max_rounds
        )

    def sample_prior(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
        """Points on Σ: Gaussian proposals projected by Newton (not exactly uniform)."""
        return self._surface_points(n, generator, device).to(torch.get_default_dtype())

    def density_weight(self, x: Tensor, kappa: float = 6.0) -> Tensor:
        """Unnormalised density ∝ Σ_k w_k exp(κ (cos∠(x, c_k) − 1)) on the surface."""
        c = torch.tensor(self.density_centres, dtype=x.dtype, device=x.device)
        c = c / c.norm(dim=1, keepdim=True)
        w = torch.tensor(self.density_weights, dtype=x.dtype, device=x.device)
        cos = (x / x.norm(dim=1, keepdim=True)) @ c.T
        return (w * torch.exp(kappa * (cos - 1.0))).sum(dim=1)

    def sample_density(self, n: int, seed: int = 0, kappa: float = 6.0, oversample: int = 10, device=None) -> Tensor:
        """n points on Σ from a fixed non-uniform density (deterministic given ``seed``).

        An approximately uniform surface sample (``oversample``·n projected proposals)
        is resampled with weights ``density_weight``: a mixture of bumps around the
        ``density_centres`` directions with concentration ``kappa``.
        """
        gen = torch.Generator(device=device or "cpu").manual_seed(seed)
        pool = self._surface_points(oversample * n, gen, device)
        w = self.density_weight(pool, kappa)
        idx = torch.multinomial(w / w.sum(), n, replacement=True, generator=gen)
        return pool[idx].to(torch.get_default_dtype())

    def spec(self) -> dict:
        return {**super().spec(), "density_centres": [list(c) for c in self.density_centres],
                "density_weights": list(self.density_weights)}


class Torus(ImplicitSurface):
    """Ring torus, signed-distance form h = sqrt((ρ − R)² + z²) − r."""

    name = "torus"
    density_centres = ((1.0, 0.0, 0.3), (-0.5, 0.85, -0.3), (-0.5, -0.85, 0.0))

    def __init__(self, R: float = 1.0, r: float = 0.4, eps: float = 0.1, delta: float = 1e-6) -> None:
        if not 0 < r < R:
            raise ValueError(f"need 0 < r < R for a ring torus, got R={R}, r={r}")
        super().__init__(eps=eps, delta=delta)
        self.R, self.r = float(R), float(r)
        self.proposal_scale = self.R

    def h(self, x: Tensor) -> Tensor:
        rho = x[:, :2].norm(dim=1)
        return (torch.sqrt((rho - self.R) ** 2 + x[:, 2] ** 2) - self.r).unsqueeze(1)

    def spec(self) -> dict:
        return {**super().spec(), "R": self.R, "r": self.r}


class TangleCube(ImplicitSurface):
    """Goursat's tangle cube x⁴ − 5x² + y⁴ − 5y² + z⁴ − 5z² + c = 0 (c = 11.8)."""

    name = "tangle_cube"
    proposal_scale = 1.5

    def __init__(self, c: float = 11.8, eps: float = 0.1, delta: float = 1e-6) -> None:
        super().__init__(eps=eps, delta=delta)
        self.c = float(c)

    def h(self, x: Tensor) -> Tensor:
        return ((x**4 - 5.0 * x**2).sum(dim=1) + self.c).unsqueeze(1)

    def h_jac(self, x: Tensor) -> Tensor:
        return (4.0 * x**3 - 10.0 * x).unsqueeze(1)

    def spec(self) -> dict:
        return {**super().spec(), "c": self.c}


class BumpySphere(ImplicitSurface):
    """h = ‖x‖ − 1 − a·Y(x/‖x‖), Y a real spherical harmonic with max |Y| = 1."""

    name = "bumpy_sphere"

    def __init__(self, a: float = 0.1, harmonic: str = "xyz", eps: float = 0.1, delta: float = 1e-6) -> None:
        if harmonic not in ("xyz", "z2"):
            raise ValueError(f"harmonic must be 'xyz' or 'z2', got {harmonic!r}")
        if not 0 <= a < 0.5:
            raise ValueError(f"need 0 <= a < 0.5 so the surface stays star-shaped, got {a}")
        super().__init__(eps=eps, delta=delta)
        self.a, self.harmonic = float(a), harmonic

    def Y(self, u: Tensor) -> Tensor:
        if self.harmonic == "xyz":
            return 3.0 * math.sqrt(3.0) * u[:, 0] * u[:, 1] * u[:, 2]
        return 0.5 * (3.0 * u[:, 2] ** 2 - 1.0)

    def h(self, x: Tensor) -> Tensor:
        r = x.norm(dim=1)
        return (r - 1.0 - self.a * self.Y(x / r.unsqueeze(1))).unsqueeze(1)

    def spec(self) -> dict:
        return {**super().spec(), "a": self.a, "harmonic": self.harmonic}
