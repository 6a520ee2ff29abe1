"""The landing loops: constrained noising and denoising dynamics (landing.md §1.3–1.6).

Overdamped and underdamped dynamics, each with landing, Newton projection or
no constraint handling, are settings of the same loops: the step only differs
in how the tangent move ``y`` is returned to Σ (``constrain``). Everything stays
on the tensors' device; the landing loops never read a value back to the host.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor

from cdcore.constraints import Constraint
from cdcore.constraints.base import Geometry
from cdcore.dynamics.result import Callback, SampleResult, ScoreFn
from cdcore.dynamics.schedules import NoiseSchedule

Handling = Literal["landing", "projection", "none", "reject"]
DynamicsKind = Literal["overdamped", "underdamped"]


@dataclass(frozen=True)
class DynamicsConfig:
    """The switches that select one of the sampler family (OLLA, OLLA-P, ULLA, ULLA-P, ambient)."""

    kind: DynamicsKind = "overdamped"
    handling: Handling = "landing"
    landing: Literal["explicit", "implicit"] = "implicit"
    alpha: float = 50.0
    gamma: float = 5.0
    newton_tol: float = 1e-5
    newton_max_iter: int = 30
    terminal_projection: bool = True
    terminal_landing_steps: int = 5


def landing_rates(schedule: NoiseSchedule, cfg: DynamicsConfig) -> list[float]:
    """Per-step explicit landing rate α σ_k² Δt (σ_k² Δt scaled by σ² again for underdamped time)."""
    return [cfg.alpha * s * s * schedule.dt for s in schedule.sigmas()[: schedule.N]]


def check_landing_stability(schedule: NoiseSchedule, cfg: DynamicsConfig) -> list[bool]:
    """Which steps must fall back to the implicit step; warn once if any.

    Explicit landing multiplies the residual by (1 − rate) per step: for
    rate >= 2 it grows, so those steps take the always-stable implicit step.
    """
    if cfg.handling != "landing" or cfg.landing == "implicit":
        return [True] * schedule.N
    rates = landing_rates(schedule, cfg)
    unstable = [r >= 2.0 for r in rates]
    if any(unstable):
        warnings.warn(
            f"explicit landing is unstable (alpha*sigma^2*dt >= 2, up to {max(rates):.2f}) on "
            f"{sum(unstable)} of {schedule.N} steps; those steps take the implicit landing step",
            RuntimeWarning,
            stacklevel=3,
        )
    return unstable


def constrain(
    constraint: Constraint,
    x: Tensor,
    y: Tensor,
    cfg: DynamicsConfig,
    rate: float,
    implicit: bool,
    geo: Optional[Geometry] = None,
) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """Move from x by the tangent step y and return to Σ: (x_new, converged, newton_iters).

    ``geo``: the geometry at x, where the caller has it (explicit landing reads the one that projected y)."""
    if cfg.handling == "none":
        return x + y, None, None
    if cfg.handling == "reject":
        # Metropolis / reflected step (Fishman et al. 2023): land on the equalities, refuse moves that leave
        # the inequality set, keeping the current point; needs only a membership oracle for g.
        if constraint.n_eq:
            none_active = torch.zeros(x.shape[0], constraint.n_ineq, dtype=torch.bool, device=x.device)
            z = constraint.land_implicit(x, y, active=none_active)
        else:
            z = x + y
        inside = (constraint.g(z) <= 0).all(dim=1) & torch.isfinite(z).all(dim=1)
        return torch.where(inside.unsqueeze(1), z, x), None, None
    if cfg.handling == "projection":
        proj = constraint.project(x, y, tol=cfg.newton_tol, max_iter=cfg.newton_max_iter)
        return proj.x, proj.converged, proj.iterations
    if implicit:
        return constraint.land_implicit(x, y), None, None
    return constraint.land_explicit(x, y, rate, geo), None, None


def land_to_tolerance(constraint: Constraint, x: Tensor, steps: int, tol: float) -> tuple[Tensor, Tensor]:
    """Pure landing steps (Gauss–Newton, no network) on the samples still off Σ by more than ``tol``.

    Explicit landing contracts the residual by only (1 − α σ² Δt) per step, and that rate vanishes with σ at the
    end of sampling, so a trajectory that a bad score step threw far off (dipeptide: |φ − φ₀| = 1.8 rad) arrives
    too far for the terminal Newton projection, whose Jacobian is frozen at the start point, and was dropped.
    A few polish steps (a full-rate landing step, or the constraint's globally convergent one) converge
    quadratically from there. A fixed number of steps, masked per sample,
    keeps the loop free of host synchronisation; the count of steps taken per sample is returned.
    """
    taken = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for _ in range(steps):
        off = constraint.violation(x) > tol
        z = constraint.polish(x)
        ok = off & torch.isfinite(z).all(dim=1)
        x = torch.where(ok.unsqueeze(1), z, x)
        taken += ok.long()
    return x, taken


def _tangent(constraint: Constraint, cfg: DynamicsConfig, x: Tensor, v: Tensor,
             geo: Optional[Geometry] = None) -> Tensor:
    """Tangent part of v; ambient dynamics ("none") move freely, rejection moves along the equalities only."""
    if cfg.handling == "none":
        return v
    if cfg.handling == "reject":
        if constraint.n_eq == 0:
            return v
        none_active = torch.zeros(x.shape[0], constraint.n_ineq, dtype=torch.bool, device=x.device)
        return constraint.tangent(x, v, constraint.geometry(x, none_active))
    return constraint.tangent(x, v, geo)


def _shared_geometry(constraint: Constraint, cfg: DynamicsConfig, x: Tensor, implicit: bool) -> Optional[Geometry]:
    """An explicit landing step projects y with P(x) and lands along N(x): one geometry (Jacobian, Gram,
    Cholesky) serves both, where computing it twice cost the robot arm 40 % of its sampling time. None where
    the constraint's closed forms need none (SO(n))."""
    return constraint.step_geometry(x) if cfg.handling == "landing" and not implicit else None


LANDED_TOL = 1e-5  # |g + ε| below which a row counts as put on its shifted wall by the step


def step_active(constraint: Constraint, x_a: Tensor, x_b: Tensor, at_start: bool = False) -> Optional[Tensor]:
    """Inequality rows a step x_a → x_b acted on, for P at x_b (or at x_a, ``at_start``), (B, l); None without
    inequalities.

    A landing or projection step that moves a violated row to g = −ε leaves it inactive at the new point, so
    P(x_new) alone keeps that jump in a velocity read off the two positions: a speed ε/(σ²Δt), 500 at σ_min on
    the box, which dominated the kinetic path loss (zero-network loss of the box's data paths with implicit
    landing: 2944 per path against a floor of 50). Removed besides the rows active where P is taken: rows active
    at one end that sit on or outside their shifted wall g = −ε at the other (landed partway or fully), and rows
    exactly on it (|g + ε| ≤ ``LANDED_TOL``), which a step crossing the wall from inside leaves active at
    neither end (box 64, polytope 70 per path). A row active at one end and deep inside at the other was
    crossed, not landed (a step across a thin window, e.g. dipeptide's ψ window): kept, since with the opposite
    row active the Gram matrix would be singular. Symmetric in the ends, so the sampler (P at the start of the
    forward-time step it reads) and the loss (P at either end) remove the same rows.
    """
    if constraint.n_ineq == 0:
        return None
    eps, tol = constraint.eps, LANDED_TOL
    g_a, g_b = constraint.g(x_a), constraint.g(x_b)
    act_a, act_b = g_a >= -constraint.cutoff, g_b >= -constraint.cutoff
    near_a, near_b = g_a >= -eps - tol, g_b >= -eps - tol
    landed = ((g_a + eps).abs() <= tol) | ((g_b + eps).abs() <= tol)
    return (act_a if at_start else act_b) | (act_a & near_b) | (act_b & near_a) | landed


def _velocity(constraint: Constraint, cfg: DynamicsConfig, x_from: Tensor, x_to: Tensor, scale: float,
              at_start: bool = False) -> Tensor:
    """Forward-time velocity of the step x_from → x_to read off positions, P(x)(x_to − x_from)/scale at its end
    x_to (the forward's v_k, landing.md §1.6) or its start x_from (``at_start``: the sampler's, as the loss
    conditions on it), with P removing the rows the step acted on (``step_active``) where landing or projection
    moved them."""
    x = x_from if at_start else x_to
    v = (x_to - x_from) / scale
    active = step_active(constraint, x_from, x_to, at_start) if cfg.handling in ("landing", "projection") else None
    if active is None:
        return _tangent(constraint, cfg, x, v)
    return constraint.tangent(x, v, constraint.geometry(x, active))


@torch.no_grad()
def forward_paths(
    constraint: Constraint,
    x0: Tensor,
    schedule: NoiseSchedule,
    cfg: DynamicsConfig,
    generator: Optional[torch.Generator] = None,
    keep_paths: bool = True,
) -> SampleResult:
    """Simulate the constrained noising process from data, returning paths (B, N+1, d).

    The last step ends with one Newton projection (landing leaves an O(residual)
    offset); trajectories whose projection fails are flagged in ``dropped``.
    """
    implicit = check_landing_stability(schedule, cfg)
    sig, dt = schedule.sigmas(), schedule.dt
    x = x0
    dropped = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    newton = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    out = [x] if keep_paths else None
    v = None
    if cfg.kind == "underdamped":
        v = _tangent(constraint, cfg, x, torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype))
    for k in range(schedule.N):
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        geo = _shared_geometry(constraint, cfg, x, implicit[k])
        if cfg.kind == "overdamped":
            y = _tangent(constraint, cfg, x, sig[k] * math.sqrt(dt) * noise, geo)
        else:
            hk = sig[k] ** 2 * dt
            a = math.exp(-cfg.gamma * hk)
            v_new = a * v + math.sqrt(1 - a * a) * noise
            y = hk * _tangent(constraint, cfg, x, v_new, geo)
        x_new, ok, it = constrain(constraint, x, y, cfg, cfg.alpha * sig[k] ** 2 * dt, implicit[k], geo)
        if k == schedule.N - 1 and cfg.terminal_projection and cfg.handling == "landing":
            proj = constraint.project(x_new, tol=cfg.newton_tol, max_iter=cfg.newton_max_iter)
            x_new, ok, it = proj.x, proj.converged, proj.iterations
        if ok is not None:
            dropped |= ~ok
            newton += it
        if cfg.kind == "underdamped":
            v = _velocity(constraint, cfg, x, x_new, sig[k] ** 2 * dt)
        x = x_new
        if keep_paths:
            out.append(x)
    paths = torch.stack(out, dim=1) if keep_paths else None
    return SampleResult(x=x, dropped=dropped, newton_iters=newton, paths=paths)


@torch.no_grad()
def sample(
    score: ScoreFn,
    constraint: Constraint,
    schedule: NoiseSchedule,
    cfg: DynamicsConfig,
    n: int,
    generator: Optional[torch.Generator] = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    x_init: Optional[Tensor] = None,
    callback: Optional[Callback] = None,
) -> SampleResult:
    """Backward (denoising) sampling from the prior on Σ to data, k = N−1 … 0.

    Overdamped (landing.md §1.4): y = P(x)[½σ_k² s_θ(x, t_{k+1}) Δt + σ_k √Δt ξ].
    Underdamped (§1.6): v' = a_k v̂ + h_k s_θ([x, v̂], t_{k+1}) + √(1−a_k²) ξ,
    x ← x − h_k P(x) v', with v̂ reconstructed from the last two positions.
    σ is taken at the earlier time t_k and the network at t_{k+1}, as in the loss.
    """
    implicit = check_landing_stability(schedule, cfg)
    sig, dt = schedule.sigmas(), schedule.dt
    x = constraint.sample_prior(n, generator=generator, device=device).to(dtype) if x_init is None else x_init
    dropped = torch.zeros(n, dtype=torch.bool, device=x.device)
    newton = torch.zeros(n, dtype=torch.long, device=x.device)
    v = None
    if cfg.kind == "underdamped":
        v = _tangent(constraint, cfg, x, torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype))
    for k in range(schedule.N - 1, -1, -1):
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        geo = _shared_geometry(constraint, cfg, x, implicit[k])
        if cfg.kind == "overdamped":
            drift = 0.5 * sig[k] ** 2 * dt * score(x, None, k + 1)
            y = _tangent(constraint, cfg, x, drift + sig[k] * math.sqrt(dt) * noise, geo)
        else:
            hk = sig[k] ** 2 * dt
            a = math.exp(-cfg.gamma * hk)
            v_new = a * v + hk * score(x, v, k + 1) + math.sqrt(1 - a * a) * noise
            y = -hk * _tangent(constraint, cfg, x, v_new, geo)
        x_new, ok, it = constrain(constraint, x, y, cfg, cfg.alpha * sig[k] ** 2 * dt, implicit[k], geo)
        if ok is not None:
            dropped |= ~ok
            newton += it
        if cfg.kind == "underdamped":
            # forward-time velocity at the new point, as the loss conditions on it
            v = _velocity(constraint, cfg, x_new, x, sig[k] ** 2 * dt, at_start=True)
        x = x_new
        if callback is not None:
            callback(schedule.N - k, x)
    # The terminal polish and projection run in float64 whatever the sampling dtype, and the samples come back in
    # float64: near a coordinate of 17 Å (dipeptide data sit that far from the origin) float32 rounds the residual
    # at ~1e-5, the tolerance itself, which dropped 0.2–1.2 % of samples that were on the set, and storing a
    # projected sample in float32 alone puts it 1.1e-5 off.
    x = x.double()
    if cfg.handling == "landing" and cfg.terminal_landing_steps:
        x, polish = land_to_tolerance(constraint, x, cfg.terminal_landing_steps, cfg.newton_tol)
        newton += polish
    if cfg.terminal_projection and cfg.handling in ("landing", "none", "reject"):
        proj = constraint.project(x, tol=cfg.newton_tol, max_iter=cfg.newton_max_iter)
        x = proj.x
        dropped |= ~proj.converged
        newton += proj.iterations
    return SampleResult(x=x, dropped=dropped, nfe=schedule.N, newton_iters=newton)
