"""Alanine dipeptide heavy atoms: one dihedral equality, one dihedral window (mixed set).

x ∈ R^30 = 10 heavy atoms × (x, y, z) in Ångström, atoms in the order of the
shipped data (``shared/data/dipeptide``). Atom indices are **0-based**; with them
the shipped data has φ = −70° to 6e-4° (1-based indexing gives φ spread over
(−180°, 180°], i.e. it is wrong).

Angles are in **radians** internally (residuals, ``eps``); the constructor takes
degrees for readability.

- h(x) = wrap(φ(x) − φ₀), φ = dihedral(atoms 1, 3, 4, 6), φ₀ = −70°;
- g(x) = [ψ − ψ_hi, ψ_lo − ψ] with ψ = dihedral(atoms 3, 4, 6, 8), window [130°, 170°].

The window is ``max(ψ − 170°, 130° − ψ) <= 0``, nonsmooth, so it is written as two
smooth rows. Both dihedral residuals are computed branch-free with ``atan2`` of the
dihedral's (sin, cos) rotated by the reference angle, so h lies in (−π, π] and is
smooth everywhere except at the antipode of φ₀; ψ is measured relative to the
window centre (150°), which puts its branch cut at ψ = −30°, opposite the window,
instead of at ±180° right next to it (on ψ ∈ (−30°, 180°] the rows equal ψ − 170°
and 130° − ψ exactly).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from cdcore.constraints.base import Constraint

PHI_ATOMS = (1, 3, 4, 6)
PSI_ATOMS = (3, 4, 6, 8)

# A feasible conformation (φ = −70°, ψ in the window), copied from
# shared/data/dipeptide/dipeptide_ref_phi_psiwin.npy so that the prior needs no data file.
REFERENCE_CONFORMATION = (
    (14.430000305175781, 14.05000114440918, 17.610000610351562),
    (15.998357974222628, 14.148999232945949, 17.174046889731788),
    (17.010000228881836, 13.5600004196167, 17.479999542236328),
    (16.286699179153903, 14.917390910063434, 16.207217612824202),
    (17.519752111612238, 15.85785481945319, 16.156117644952527),
    (17.260000228881836, 16.670000076293945, 14.870000839233398),
    (17.155192680506826, 16.905758775940715, 17.192621209424928),
    (16.0, 17.020000457763672, 17.55000114440918),
    (18.360000610351562, 17.450000762939453, 17.540000915527344),
    (18.280000686645508, 18.740001678466797, 18.280000686645508),
)


def dihedral_sincos(p0: Tensor, p1: Tensor, p2: Tensor, p3: Tensor) -> tuple[Tensor, Tensor]:
    """(y, x) with dihedral = atan2(y, x), both scaled by the same positive factor.

    IUPAC convention (the one of the landing code and of MD packages):
    n1 = b1 × b2, n2 = b2 × b3, x = n1·n2, y = |b2| b1·n2 (b_k = p_k − p_{k−1}).
    """
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1 = torch.linalg.cross(b1, b2, dim=-1)
    n2 = torch.linalg.cross(b2, b3, dim=-1)
    x = (n1 * n2).sum(-1)
    y = (b1 * n2).sum(-1) * b2.norm(dim=-1)
    return y, x


def dihedral(p0: Tensor, p1: Tensor, p2: Tensor, p3: Tensor) -> Tensor:
    """Dihedral angle in radians, (−π, π]."""
    y, x = dihedral_sincos(p0, p1, p2, p3)
    return torch.atan2(y, x)


def _relative_angle(y: Tensor, x: Tensor, ref: float) -> Tensor:
    """wrap(atan2(y, x) − ref) in (−π, π], without a branch: rotate (x, y) by −ref."""
    c, s = math.cos(ref), math.sin(ref)
    return torch.atan2(y * c - x * s, x * c + y * s)


class Dipeptide(Constraint):
    """φ = φ₀ (equality) and ψ in [ψ_lo, ψ_hi] (two inequality rows); radians internally."""

    name = "dipeptide"

    def __init__(
        self,
        phi_deg: float = -70.0,
        psi_window_deg: tuple[float, float] = (130.0, 170.0),
        eps: float = 0.05,
        cutoff: float = 0.0,
        delta: float = 1e-6,
    ) -> None:
        lo, hi = float(psi_window_deg[0]), float(psi_window_deg[1])
        if not lo < hi:
            raise ValueError(f"psi window must have lo < hi, got {psi_window_deg}")
        super().__init__(30, n_eq=1, n_ineq=2, eps=eps, cutoff=cutoff, delta=delta)
        self.phi_deg, self.psi_window_deg = float(phi_deg), (lo, hi)
        self.phi0 = math.radians(phi_deg)
        self.psi_lo, self.psi_hi = math.radians(lo), math.radians(hi)
        self.psi_mid = 0.5 * (self.psi_lo + self.psi_hi)
        self.psi_half = 0.5 * (self.psi_hi - self.psi_lo)

    @staticmethod
    def _atoms(x: Tensor, idx: tuple[int, ...]) -> list[Tensor]:
        X = x.reshape(x.shape[0], 10, 3)
        return [X[:, i] for i in idx]

    def phi(self, x: Tensor) -> Tensor:
        """φ in radians, shape (B,)."""
        return dihedral(*self._atoms(x, PHI_ATOMS))

    def psi(self, x: Tensor) -> Tensor:
        """ψ in radians, shape (B,)."""
        return dihedral(*self._atoms(x, PSI_ATOMS))

    def h(self, x: Tensor) -> Tensor:
        y, c = dihedral_sincos(*self._atoms(x, PHI_ATOMS))
        return _relative_angle(y, c, self.phi0).unsqueeze(1)

    def g(self, x: Tensor) -> Tensor:
        y, c = dihedral_sincos(*self._atoms(x, PSI_ATOMS))
        d = _relative_angle(y, c, self.psi_mid)  # ψ − ψ_mid, wrapped
        return torch.stack([d - self.psi_half, -self.psi_half - d], dim=1)

    def sample_prior(
        self,
        n: int,
        generator: Optional[torch.Generator] = None,
        device=None,
        noise: float = 0.05,
        max_rounds: int = 20,
    ) -> Tensor:
        """The reference conformation, randomly rotated and translated, with Gaussian
        atom noise (``noise`` Å), Newton-projected onto Σ; non-converged samples redrawn.

        A simple reference distribution: the landing paper starts its backward
        sampler from forward-simulated data instead.
        """
        ref = torch.tensor(REFERENCE_CONFORMATION, dtype=torch.float64, device=device)
        ref = ref - ref.mean(0)

        def propose(k: int) -> Tensor:
            Q, Rq = torch.linalg.qr(torch.randn(k, 3, 3, generator=generator, device=device, dtype=torch.float64))
            Q = Q * torch.sign(torch.diagonal(Rq, dim1=-2, dim2=-1)).unsqueeze(-2)
            Q = Q * torch.sign(torch.linalg.det(Q)).view(k, 1, 1)  # proper rotations
            X = ref.unsqueeze(0) @ Q.transpose(1, 2)
            X = X + noise * torch.randn(k, 10, 3, generator=generator, device=device, dtype=torch.float64)
            X = X + torch.randn(k, 1, 3, generator=generator, device=device, dtype=torch.float64)
            return X.reshape(k, 30)

        x = self.projected_draws(propose, n, max_rounds=max_rounds)
        return x.to(torch.get_default_dtype())

    def spec(self) -> dict:
        return {
            **super().spec(),
            "phi_deg": self.phi_deg,
            "psi_window_deg": list(self.psi_window_deg),
            "atoms_phi": list(PHI_ATOMS),
            "atoms_psi": list(PSI_ATOMS),
            "index_base": 0,
            "units": {"x": "angstrom", "h": "rad", "g": "rad", "eps": "rad"},
        }
