"""The feasible set Σ = {x : h(x) = 0, g(x) <= 0}, batched over samples.

One class serves every method: landing uses the geometry (tangent projection,
normal step), the projection baselines use the Newton projection, the
evaluation uses the violation. Points are tensors of shape (B, d).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

BatchFn = Callable[[Tensor], Tensor]
# (h, ∂h) and (g, ∂g) at a batch, None where the set has no such rows (``Constraint.parts``)
Parts = tuple[Optional[tuple[Tensor, Tensor]], Optional[tuple[Tensor, Tensor]]]


def batched_jacobian(fn: BatchFn, x: Tensor) -> Tensor:
    """Per-sample Jacobian of a batched map (B, d) -> (B, k) as (B, k, d).

    ``vmap(jacrev)`` gives all rows in one vectorised call: no Python loop over
    samples or over constraint rows.
    """

    def single(xi: Tensor) -> Tensor:
        return fn(xi.unsqueeze(0)).squeeze(0)

    return torch.func.vmap(torch.func.jacrev(single))(x)


@dataclass(frozen=True)
class Geometry:
    """Constraint quantities at a batch of points, computed once per step and reused.

    ``c`` is the stacked residual [h; (g_j + eps)_{j active}] with zeros on inactive
    rows, ``J`` its Jacobian (inactive rows zero), ``chol`` the Cholesky factor of
    the Gram matrix J Jᵀ + δI. Zeroed rows make G diagonal there, so inactive
    constraints drop out of every solve without changing shapes (no host sync).
    With ``blocks`` (a block-diagonal J, see ``Constraint.row_blocks``) ``chol`` holds
    one factor per block, (B, K, r, r): for the robot arm (10 waypoints, 226 rows)
    about a hundred times fewer flops than one 226-row factor.
    """

    c: Tensor
    J: Tensor
    chol: Tensor
    active: Tensor
    blocks: Optional["RowBlocks"] = None
    # with ``blocks``: J restricted to each block's rows and columns, (B, K, r, d/K); the products with J
    # run on it, K times fewer flops than on the dense J (robot arm: 25×14 blocks of a 226×140 J)
    J_local: Optional[Tensor] = None

    def solve(self, rhs: Tensor) -> Tensor:
        """(J Jᵀ + δI)⁻¹ rhs in the factor's layout: (B, m), or (B, K, r) with ``blocks``."""
        # two triangular solves rather than cholesky_solve, which reads a status flag back to the host
        y = torch.linalg.solve_triangular(self.chol, rhs.unsqueeze(-1), upper=False)
        return torch.linalg.solve_triangular(self.chol.mT, y, upper=True).squeeze(-1)

    def remove_normal(self, v: Tensor) -> Tensor:
        """v − Jᵀ (J Jᵀ + δI)⁻¹ J v."""
        if self.J_local is None:
            return v - torch.einsum("bkd,bk->bd", self.J, self.solve(torch.einsum("bkd,bd->bk", self.J, v)))
        vb = v.reshape(*self.J_local.shape[:2], -1)
        lam = self.solve(torch.einsum("bkrw,bkw->bkr", self.J_local, vb))
        return (vb - torch.einsum("bkrw,bkr->bkw", self.J_local, lam)).reshape(v.shape)

    def normal_step(self) -> Tensor:
        """−Jᵀ (J Jᵀ + δI)⁻¹ c."""
        if self.J_local is None:
            return -torch.einsum("bkd,bk->bd", self.J, self.solve(self.c))
        lam = self.solve(self.blocks.gather(self.c))
        return -torch.einsum("bkrw,bkr->bkw", self.J_local, lam).reshape(self.J.shape[0], -1)


@dataclass(frozen=True)
class RowBlocks:
    """Rows of c grouped into K independent blocks; block k touches only columns [k·w, (k+1)·w).

    ``index`` (K, r) lists each block's rows; short blocks are padded with their own first row and masked by
    ``valid``, so no gather copies a padded J. ``inverse`` (m,) gives each row's position in the flattened
    (K·r) layout, so scattering back is a gather too (deterministic, no index_put).
    """

    index: Tensor
    valid: Tensor
    inverse: Tensor

    @staticmethod
    def from_rows(rows: list[list[int]], n_rows: int) -> "RowBlocks":
        r = max(len(b) for b in rows)
        index = torch.zeros((len(rows), r), dtype=torch.long)
        valid = torch.zeros((len(rows), r))
        inverse = torch.full((n_rows,), -1, dtype=torch.long)
        for k, b in enumerate(rows):
            index[k] = b[0]
            index[k, : len(b)] = torch.tensor(b, dtype=torch.long)
            valid[k, : len(b)] = 1.0
            inverse[torch.tensor(b, dtype=torch.long)] = k * r + torch.arange(len(b))
        if bool((inverse < 0).any()):
            raise ValueError("row blocks must cover every constraint row")
        return RowBlocks(index=index, valid=valid, inverse=inverse)

    def to(self, device) -> "RowBlocks":
        return RowBlocks(self.index.to(device), self.valid.to(device), self.inverse.to(device))

    def gather(self, v: Tensor) -> Tensor:
        """(B, m) -> (B, K, r), zero on padding."""
        return v[:, self.index] * self.valid.to(v.dtype)

    def scatter(self, vb: Tensor) -> Tensor:
        """(B, K, r) -> (B, m)."""
        return vb.reshape(vb.shape[0], -1)[:, self.inverse]

    def local(self, J: Tensor) -> Tensor:
        """(B, m, d) -> (B, K, r, d/K): each block's rows restricted to its own columns, zero on padding."""
        B, m, d = J.shape
        K, r = self.index.shape
        cols = torch.arange(K, device=J.device).unsqueeze(1).expand(K, r)
        return J.view(B, m, K, d // K)[:, self.index, cols] * self.valid.to(J.dtype).unsqueeze(-1)


@dataclass(frozen=True)
class Projection:
    """Result of a Newton projection: per-sample success instead of a silent drop."""

    x: Tensor
    converged: Tensor  # (B,) bool
    iterations: Tensor  # (B,) int: Newton iterations each sample used

    @property
    def failure_rate(self) -> float:
        return float((~self.converged).float().mean())


class Constraint:
    """Base class; subclasses implement ``h`` and/or ``g`` on batches.

    Jacobians default to ``torch.func``; a subclass may override ``h_jac`` /
    ``g_jac`` with analytic forms (sphere, SO(n)) where they are much cheaper.
    """

    name: str = "constraint"

    def __init__(
        self,
        dim: int,
        n_eq: int,
        n_ineq: int = 0,
        eps: float = 0.1,
        cutoff: float = 0.0,
        delta: float = 1e-6,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if n_eq < 0 or n_ineq < 0 or n_eq + n_ineq == 0:
            raise ValueError(f"need at least one constraint row, got n_eq={n_eq}, n_ineq={n_ineq}")
        self.dim, self.n_eq, self.n_ineq = dim, n_eq, n_ineq
        self.eps, self.cutoff, self.delta = eps, cutoff, delta

    # ----- residuals -------------------------------------------------------
    def h(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], 0)

    def g(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], 0)

    def h_jac(self, x: Tensor) -> Tensor:
        if self.n_eq == 0:
            return x.new_zeros(x.shape[0], 0, self.dim)
        return batched_jacobian(self.h, x)

    def g_jac(self, x: Tensor) -> Tensor:
        if self.n_ineq == 0:
            return x.new_zeros(x.shape[0], 0, self.dim)
        return batched_jacobian(self.g, x)

    @property
    def n_rows(self) -> int:
        return self.n_eq + self.n_ineq

    def violation(self, x: Tensor) -> Tensor:
        """Per-sample max(|h|, relu(g)): the number every method is judged by."""
        parts = []
        if self.n_eq:
            parts.append(self.h(x).abs())
        if self.n_ineq:
            parts.append(torch.relu(self.g(x)))
        return torch.cat(parts, dim=1).amax(dim=1)

    def distance(self, x: Tensor) -> Tensor:
        """Per-sample mean|h| + mean relu(g): the constraint distance ℓ_constr that NAMM's losses and its
        evaluation use; the image constraints override it with the paper's scaled L1 norm of h."""
        parts = []
        if self.n_eq:
            parts.append(self.h(x).abs().mean(dim=1))
        if self.n_ineq:
            parts.append(torch.relu(self.g(x)).mean(dim=1))
        return torch.stack(parts).sum(dim=0)

    def active_set(self, x: Tensor) -> Tensor:
        """Inequalities within ``cutoff`` of their boundary, shape (B, l)."""
        return self.g(x) >= -self.cutoff

    def parts(self, x: Tensor) -> Parts:
        """(h, ∂h) and (g, ∂g), None where the set has none: what the stack of every active set is cut from,
        so two active sets at one point (the kinetic loss's P and P_v) evaluate the constraint once. A
        constraint that computes them in one pass (the robot's forward kinematics) overrides this."""
        h = (self.h(x), self.h_jac(x)) if self.n_eq else None
        g = (self.g(x), self.g_jac(x)) if self.n_ineq else None
        return h, g

    def stacked(self, x: Tensor, active: Optional[Tensor] = None,
                parts: Optional[Parts] = None) -> tuple[Tensor, Tensor, Tensor]:
        """(c_eps, J, active) with inactive inequality rows zeroed; ``parts``: ``self.parts(x)`` if already known."""
        h, g = self.parts(x) if parts is None else parts
        return self._stack(x, h, g, active)

    def _stack(self, x: Tensor, h: Optional[tuple[Tensor, Tensor]], g: Optional[tuple[Tensor, Tensor]],
               active: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """``stacked`` from (h, ∂h) and (g, ∂g)."""
        cs, js = [], []
        if h is not None:
            cs.append(h[0])
            js.append(h[1])
        if g is not None:
            gx, gj = g
            if active is None:
                active = gx >= -self.cutoff
            m = active.to(x.dtype)
            cs.append((gx + self.eps) * m)
            js.append(gj * m.unsqueeze(-1))
        else:
            active = x.new_zeros(x.shape[0], 0, dtype=torch.bool)
        return torch.cat(cs, dim=1), torch.cat(js, dim=1), active

    def _chol(self, A: Tensor) -> Tensor:
        eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
        L, _ = torch.linalg.cholesky_ex(A + self.delta * eye)
        return L

    def row_blocks(self) -> Optional[RowBlocks]:
        """Independent row blocks of the stacked Jacobian, or None (one dense block).

        A constraint made of per-chunk conditions (the robot arm: every row reads one waypoint) declares them,
        and every Gram solve (landing, tangent projection, Newton projection) runs per block.
        """
        return None

    def _blocks_on(self, device) -> Optional[RowBlocks]:
        cache = self.__dict__.setdefault("_row_blocks_cache", {})
        key = str(device)
        if key not in cache:
            rb = self.row_blocks()
            cache[key] = rb.to(device) if rb is not None else None
        return cache[key]

    def geometry(self, x: Tensor, active: Optional[Tensor] = None, parts: Optional[Parts] = None) -> Geometry:
        c, J, active = self.stacked(x, active, parts)
        blocks = self._blocks_on(x.device)
        Jg = J if blocks is None else blocks.local(J)
        return Geometry(c=c, J=J, chol=self._chol(Jg @ Jg.mT), active=active, blocks=blocks,
                        J_local=None if blocks is None else Jg)

    def step_geometry(self, x: Tensor) -> Optional[Geometry]:
        """The geometry an explicit landing step shares between P(x) and N(x), or None where the constraint's
        own tangent and normal step need none (closed forms)."""
        return self.geometry(x)

    # ----- geometry --------------------------------------------------------
    def tangent(self, x: Tensor, v: Tensor, geo: Optional[Geometry] = None) -> Tensor:
        """P(x) v = v − Jᵀ G⁻¹ J v."""
        geo = geo or self.geometry(x)
        return geo.remove_normal(v)

    def normal_step(self, x: Tensor, geo: Optional[Geometry] = None) -> Tensor:
        """N(x) = −Jᵀ G⁻¹ c_eps: the minimum-norm Gauss–Newton step to c_eps = 0."""
        geo = geo or self.geometry(x)
        return geo.normal_step()

    def land_explicit(self, x: Tensor, y: Tensor, rate: float, geo: Optional[Geometry] = None) -> Tensor:
        """x + y + rate·N(x): contracts c_eps by (1 − rate) per step, stable for rate < 2."""
        return x + y + rate * self.normal_step(x, geo)

    def land_implicit(self, x: Tensor, y: Tensor, active: Optional[Tensor] = None) -> Tensor:
        """z + N(z) at the predicted point z = x + y: a full Gauss–Newton step, always stable.

        ``active`` overrides the inequality active set (all False: equalities only).
        """
        z = x + y
        return z + self.normal_step(z, self.geometry(z, active) if active is not None else None)

    def polish(self, x: Tensor) -> Tensor:
        """One network-free step back toward Σ, for the samples still off it when sampling ends.

        A full Gauss–Newton step by default; a constraint whose Gauss–Newton step only converges near Σ
        overrides it with a globally convergent one (SO(n): a scaled Newton–Schulz step).
        """
        return self.land_implicit(x, torch.zeros_like(x))

    # ----- Newton projection ----------------------------------------------
    def project(
        self,
        x: Tensor,
        y: Optional[Tensor] = None,
        tol: float = 1e-5,
        max_iter: int = 30,
    ) -> Projection:
        """Find z = x + y − J(x)ᵀμ with c(z) = 0 (RDDPM / OLLA-P projection).

        Inequalities use an active set: rows enter when violated, leave when
        their multiplier turns negative. A sample that does not converge in
        ``max_iter`` iterations, or turns non-finite, keeps ``x + y`` and is
        reported in ``converged`` rather than dropped silently.
        """
        y = torch.zeros_like(x) if y is None else y
        base = x + y
        B = x.shape[0]
        _, Jx_full, _ = self.stacked(x, active=torch.ones(B, self.n_ineq, dtype=torch.bool, device=x.device))
        active = self.g(base) > 0 if self.n_ineq else x.new_zeros(B, 0, dtype=torch.bool)
        mu = x.new_zeros(B, self.n_rows)
        done = torch.zeros(B, dtype=torch.bool, device=x.device)
        iters = torch.zeros(B, dtype=torch.long, device=x.device)
        z = base
        for _ in range(max_iter):
            z = base - torch.einsum("bkd,bk->bd", Jx_full, mu)
            done = self._projection_done(z, mu, active, tol)
            if bool(done.all()):
                break
            # active set update: violated rows enter, rows with negative multipliers leave
            if self.n_ineq:
                gz = self.g(z)
                lam = mu[:, self.n_eq:]
                entering_leaving = (active & (lam >= -1e-8)) | (gz > 0)
                active = torch.where(done.unsqueeze(1), active, entering_leaving)
                mu = torch.cat([mu[:, : self.n_eq], lam * active], dim=1)
            c, Jz, _ = self.stacked(z, active)
            mask = torch.cat([torch.ones(B, self.n_eq, dtype=torch.bool, device=x.device), active], dim=1)
            Jx = Jx_full * mask.unsqueeze(-1).to(x.dtype)
            step = self._newton_solve(Jz, Jx, c)
            mu = torch.where(done.unsqueeze(1), mu, mu + step)
            iters = iters + (~done).long()
        else:
            z = base - torch.einsum("bkd,bk->bd", Jx_full, mu)
            done = self._projection_done(z, mu, active, tol)
        ok = done & torch.isfinite(z).all(dim=1)
        return Projection(x=torch.where(ok.unsqueeze(1), z, base), converged=ok, iterations=iters)

    def _newton_solve(self, Jz: Tensor, Jx: Tensor, c: Tensor) -> Tensor:
        """(J(z) J(x)ᵀ + δI)⁻¹ c, per row block where the constraint declares them."""
        blocks = self._blocks_on(c.device)
        local = (lambda M: M) if blocks is None else blocks.local  # noqa: E731
        A = local(Jz) @ local(Jx).mT
        A = A + self.delta * torch.eye(A.shape[-1], dtype=c.dtype, device=c.device)
        rhs = c if blocks is None else blocks.gather(c)
        step = torch.linalg.solve_ex(A, rhs.unsqueeze(-1))[0].squeeze(-1)
        return step if blocks is None else blocks.scatter(step)

    def _projection_done(self, z: Tensor, mu: Tensor, active: Tensor, tol: float) -> Tensor:
        ok = torch.isfinite(z).all(dim=1)
        if self.n_eq:
            ok = ok & (self.h(z).abs() <= tol).all(dim=1)
        if self.n_ineq:
            gz = self.g(z)
            lam = mu[:, self.n_eq:]
            on_target = ((gz + self.eps).abs() <= tol) | ~active
            ok = ok & (gz <= tol).all(dim=1) & on_target.all(dim=1) & (lam >= -1e-8).all(dim=1)
        return ok

    # ----- sampling support -----------------------------------------------
    def projected_draws(
        self,
        propose: Callable[[int], Tensor],
        n: int,
        tol: float = 1e-8,
        max_iter: int = 30,
        min_batch: int = 8,
        max_rounds: int = 20,
    ) -> Tensor:
        """n proposals Newton-projected onto Σ, redrawing those that fail.

        A prior built this way never hands the sampler an off-set point: a proposal that does
        not converge, or converges above ``tol``, is replaced by a fresh one, not kept.
        """
        out, have = [], 0
        for _ in range(max_rounds):
            proj = self.project(propose(max(2 * (n - have), min_batch)), tol=tol, max_iter=max_iter)
            ok = proj.converged & torch.isfinite(proj.x).all(dim=1) & (self.violation(proj.x) <= tol)
            out.append(proj.x[ok])
            have += int(ok.sum())
            if have >= n:
                break
        x = torch.cat(out)[:n]
        if x.shape[0] < n:
            raise RuntimeError(
                f"{self.name} prior: only {x.shape[0]} of {n} proposals projected onto the set in {max_rounds} "
                "rounds; lower the proposal noise or raise max_rounds"
            )
        return x

    def sample_prior(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
        """A reference distribution on Σ to start backward sampling from."""
        raise NotImplementedError(f"{type(self).__name__} defines no prior; give initial points explicitly")

    def spec(self) -> dict:
        """A JSON-able description, stored with data and models."""
        return {"name": self.name, "dim": self.dim, "n_eq": self.n_eq, "n_ineq": self.n_ineq, "eps": self.eps}


class FunctionalConstraint(Constraint):
    """A feasible set from user callables on batches: h(x) -> (B, m), g(x) -> (B, l).

    The callables must be written with tensor operations only (no Python
    branching on values) so that ``torch.func`` can differentiate and vectorise them.
    """

    name = "functional"

    def __init__(
        self,
        dim: int,
        h: Optional[BatchFn] = None,
        g: Optional[BatchFn] = None,
        eps: float = 0.1,
        cutoff: float = 0.0,
        delta: float = 1e-6,
        name: str = "functional",
    ) -> None:
        probe = torch.zeros(1, dim)
        n_eq = h(probe).shape[1] if h is not None else 0
        n_ineq = g(probe).shape[1] if g is not None else 0
        super().__init__(dim, n_eq, n_ineq, eps=eps, cutoff=cutoff, delta=delta)
        self._h, self._g, self.name = h, g, name

    def h(self, x: Tensor) -> Tensor:
        return self._h(x) if self._h is not None else super().h(x)

    def g(self, x: Tensor) -> Tensor:
        return self._g(x) if self._g is not None else super().g(x)
