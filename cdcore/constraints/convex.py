"""Convex feasible sets (the inequality-baseline suites: MDM, Fishman et al.).

All Jacobians are analytic (constant for the linear sets).

- ``Box``: [lo, hi]^d, g = [x − hi; lo − x] (2d rows).
- ``Simplex``: the probability simplex {x ≥ 0, Σx = 1} ⊂ R^d: h = Σx − 1, g = −x.
- ``Ball``: {‖x‖ ≤ r}, g = ‖x‖ − r (distance form; unit gradient on the boundary).
- ``Polytope``: {Ax ≤ b}, g = Ax − b.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from cdcore.constraints.base import Constraint


def _dtype() -> torch.dtype:
    return torch.get_default_dtype()


class Box(Constraint):
    """The hypercube [lo, hi]^d."""

    name = "box"

    def __init__(self, dim: int = 2, lo: float = -1.0, hi: float = 1.0, eps: float = 0.1, cutoff: float = 0.0,
                 delta: float = 1e-6) -> None:
        if not lo < hi:
            raise ValueError(f"need lo < hi, got lo={lo}, hi={hi}")
        super().__init__(dim, n_eq=0, n_ineq=2 * dim, eps=eps, cutoff=cutoff, delta=delta)
        self.lo, self.hi = float(lo), float(hi)

    def g(self, x: Tensor) -> Tensor:
        return torch.cat([x - self.hi, self.lo - x], dim=1)

    def g_jac(self, x: Tensor) -> Tensor:
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        return torch.cat([eye, -eye]).expand(x.shape[0], 2 * self.dim, self.dim)

    def sample_prior(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
        """Uniform on the box."""
        u = torch.rand(n, self.dim, generator=generator, device=device, dtype=_dtype())
        return self.lo + (self.hi - self.lo) * u

    def spec(self) -> dict:
        return {**super().spec(), "lo": self.lo, "hi": self.hi}


class Simplex(Constraint):
    """The probability simplex Δ^{d−1} = {x ∈ R^d : x ≥ 0, Σx = 1}.

    ``eps`` defaults to 0.01, not the generic 0.1: an active row is driven to x_j = eps,
    and d·eps must stay below 1 for the shifted targets to be consistent with Σx = 1.
    """

    name = "simplex"

    def __init__(self, dim: int = 3, eps: float = 0.01, cutoff: float = 0.0, delta: float = 1e-6) -> None:
        if dim < 2:
            raise ValueError(f"simplex needs dim >= 2, got {dim}")
        super().__init__(dim, n_eq=1, n_ineq=dim, eps=eps, cutoff=cutoff, delta=delta)

    def h(self, x: Tensor) -> Tensor:
        return x.sum(dim=1, keepdim=True) - 1.0

    def h_jac(self, x: Tensor) -> Tensor:
        return x.new_ones(x.shape[0], 1, self.dim)

    def g(self, x: Tensor) -> Tensor:
        return -x

    def g_jac(self, x: Tensor) -> Tensor:
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        return (-eye).expand(x.shape[0], self.dim, self.dim)

    def sample_prior(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
        """Uniform on the simplex: Dirichlet(1, …, 1) as normalised exponentials."""
        e = -torch.log(torch.rand(n, self.dim, generator=generator, device=device, dtype=_dtype()).clamp_min(1e-300))
        return e / e.sum(dim=1, keepdim=True)


class Ball(Constraint):
    """The closed ball {‖x‖ ≤ r} with g = ‖x‖ − r."""

    name = "ball"

    def __init__(self, dim: int = 2, radius: float = 1.0, eps: float = 0.1, cutoff: float = 0.0,
                 delta: float = 1e-6) -> None:
        if radius <= 0:
            raise ValueError(f"radius must be > 0, got {radius}")
        super().__init__(dim, n_eq=0, n_ineq=1, eps=eps, cutoff=cutoff, delta=delta)
        self.radius = float(radius)

    def g(self, x: Tensor) -> Tensor:
        return x.norm(dim=1, keepdim=True) - self.radius

    def g_jac(self, x: Tensor) -> Tensor:
        # the norm is not differentiable at 0 (deep inside, never active): use 0 there, not NaN
        r = x.norm(dim=1, keepdim=True)
        return (x / r.clamp_min(torch.finfo(x.dtype).tiny)).unsqueeze(1)

    def sample_prior(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
        """Uniform in the ball: Gaussian direction, radius r·U^{1/d}."""
        z = torch.randn(n, self.dim, generator=generator, device=device, dtype=_dtype())
        u = torch.rand(n, 1, generator=generator, device=device, dtype=_dtype())
        return self.radius * u ** (1.0 / self.dim) * z / z.norm(dim=1, keepdim=True)

    def spec(self) -> dict:
        return {**super().spec(), "radius": self.radius}


class Polytope(Constraint):
    """{x : A x ≤ b}, A of shape (l, d), with the constant Jacobian A.

    The prior is uniform on the polytope by rejection from ``bounds`` (a box known
    to contain it; for the default random polytope [−1, 1]^d), if given; otherwise
    Gaussian proposals with infeasible ones Newton-projected inside.
    """

    name = "polytope"

    def __init__(self, A: Tensor | Sequence, b: Tensor | Sequence, eps: float = 0.05, cutoff: float = 0.0,
                 delta: float = 1e-6, bounds: Optional[tuple[float, float]] = None) -> None:
        A = torch.as_tensor(A, dtype=torch.float64)
        b = torch.as_tensor(b, dtype=torch.float64).reshape(-1)
        if A.ndim != 2 or A.shape[0] != b.shape[0]:
            raise ValueError(f"need A (l, d) and b (l,), got {tuple(A.shape)} and {tuple(b.shape)}")
        super().__init__(A.shape[1], n_eq=0, n_ineq=A.shape[0], eps=eps, cutoff=cutoff, delta=delta)
        self.A, self.b, self.bounds = A, b, bounds

    def g(self, x: Tensor) -> Tensor:
        A = self.A.to(dtype=x.dtype, device=x.device)
        return x @ A.T - self.b.to(dtype=x.dtype, device=x.device)

    def g_jac(self, x: Tensor) -> Tensor:
        return self.A.to(dtype=x.dtype, device=x.device).expand(x.shape[0], self.n_ineq, self.dim)

    def sample_prior(self, n: int, generator: Optional[torch.Generator] = None, device=None,
                     max_rounds: int = 100) -> Tensor:
        out, have = [], 0
        for _ in range(max_rounds):
            k = max(4 * (n - have), 64)
            if self.bounds is not None:
                lo, hi = self.bounds
                x = lo + (hi - lo) * torch.rand(k, self.dim, generator=generator, device=device, dtype=torch.float64)
                x = x[(self.g(x) <= 0).all(dim=1)]
            else:
                x = torch.randn(k, self.dim, generator=generator, device=device, dtype=torch.float64)
                proj = self.project(x)
                x = proj.x[proj.converged & (self.g(proj.x) <= 1e-9).all(dim=1)]
            out.append(x)
            have += x.shape[0]
            if have >= n:
                break
        x = torch.cat(out)[:n]
        if x.shape[0] < n:
            raise RuntimeError(f"polytope prior: only {x.shape[0]} of {n} samples")
        return x.to(_dtype())

    @classmethod
    def random(cls, dim: int = 2, n_faces: int = 4, seed: int = 0, **kw) -> "Polytope":
        """The cube [−1, 1]^d cut by ``n_faces`` random half-spaces aᵀx ≤ β (‖a‖ = 1,
        β ∈ [0.5, 0.9]): bounded, contains the ball of radius 0.5, reproducible by seed."""
        gen = torch.Generator().manual_seed(seed)
        eye = torch.eye(dim, dtype=torch.float64)
        a = torch.randn(n_faces, dim, generator=gen, dtype=torch.float64)
        a = a / a.norm(dim=1, keepdim=True)
        beta = 0.5 + 0.4 * torch.rand(n_faces, generator=gen, dtype=torch.float64)
        A = torch.cat([eye, -eye, a])
        b = torch.cat([torch.ones(2 * dim, dtype=torch.float64), beta])
        kw.setdefault("bounds", (-1.0, 1.0))
        return cls(A, b, **kw)

    def spec(self) -> dict:
        return {**super().spec(), "A": self.A.tolist(), "b": self.b.tolist(), "bounds": self.bounds}


def polytope(A=None, b=None, dim: int = 2, n_faces: int = 4, seed: int = 0, **kw) -> Polytope:
    if A is None:
        if b is not None:
            raise ValueError("give A with b")
        return Polytope.random(dim=dim, n_faces=n_faces, seed=seed, **kw)
    return Polytope(A, b, **kw)
