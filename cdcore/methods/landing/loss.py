"""The path negative log-likelihood of landing diffusion (landing.md §1.5–1.6).

Training simulates constrained forward paths from the data, caches them, and fits s_θ by the Gaussian
negative log-likelihood of each true forward step under the tangent backward kernel. The loss is a sum over
the N steps; each optimiser step estimates it without bias from random (path, step) pairs, N · mean_k, so a
batch costs ``batch_size`` network calls instead of B·N.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from cdcore.constraints import Constraint
from cdcore.constraints.base import Parts
from cdcore.dynamics import DynamicsConfig, NoiseSchedule, step_active
from cdcore.nets import ScoreModel


Projector = Callable[[Tensor], Tensor]


def _projector(constraint: Constraint, x: Tensor, ambient: bool, active: Optional[Tensor] = None,
               parts: Optional[Parts] = None) -> Projector:
    """P(x)· with the geometry computed once (no gradient through it); identity for ambient diffusion.
    ``active`` overrides the inequality rows removed (see ``dynamics.step_active``). Without it, the sampler's
    own step geometry: a constraint with a closed-form tangent (SO(n)) is trained with the P it samples with,
    not a generic Jacobian-and-Cholesky one (so10_3w: 25 ms of a 34 ms training step on a 2-core CPU)."""
    if ambient:
        return lambda v: v
    with torch.no_grad():
        geo = constraint.step_geometry(x) if active is None else constraint.geometry(x, active, parts)
    return lambda v: constraint.tangent(x, v, geo)


def overdamped_step_loss(model: ScoreModel, constraint: Constraint, schedule: NoiseSchedule,
                         paths: Tensor, idx: Tensor, k: Tensor, ambient: bool = False) -> Tensor:
    """½‖P(x_{k+1})(x_k − x_{k+1} − ½σ_k²Δt s_θ(x_{k+1}, t_{k+1}))‖² / (σ_k²Δt) per (path, k)."""
    dt = schedule.dt
    sig = torch.tensor(schedule.sigmas(), device=paths.device, dtype=paths.dtype)[k].unsqueeze(1)
    x_k, x_k1 = paths[idx, k], paths[idx, k + 1]
    s = model(x_k1, None, k + 1)
    P = _projector(constraint, x_k1, ambient)
    r = P(x_k - x_k1 - 0.5 * sig**2 * dt * s) / (sig * math.sqrt(dt))
    return 0.5 * r.pow(2).sum(dim=1)


def underdamped_step_loss(model: ScoreModel, constraint: Constraint, schedule: NoiseSchedule, gamma: float,
                          paths: Tensor, idx: Tensor, k: Tensor, generator: Optional[torch.Generator] = None,
                          ambient: bool = False) -> Tensor:
    """Kinetic path loss (landing.md §1.6) with velocities reconstructed from positions."""
    N, dt = schedule.N, schedule.dt
    sigmas = torch.tensor(schedule.sigmas(), device=paths.device, dtype=paths.dtype)
    h = (sigmas[k] ** 2 * dt).unsqueeze(1)
    a = torch.exp(-gamma * h)
    x_k, x_k1 = paths[idx, k], paths[idx, k + 1]
    x_k2 = paths[idx, torch.clamp(k + 2, max=N)]
    h_next = (sigmas[torch.clamp(k + 1, max=N - 1)] ** 2 * dt).unsqueeze(1)
    # each P removes the rows active during the step it reads (x_k → x_{k+1} for the residual, x_{k+1} → x_{k+2}
    # for the velocity), as the sampler's velocity reconstruction does: a landing jump to g = −ε is not a speed
    with torch.no_grad():
        into, out_of = step_active(constraint, x_k, x_k1), step_active(constraint, x_k1, x_k2, at_start=True)
        # two active sets at one point: the constraint (the robot's forward kinematics) is evaluated once
        parts = None if ambient or into is None else constraint.parts(x_k1)
    P = _projector(constraint, x_k1, ambient, into, parts)
    P_v = P if into is None else _projector(constraint, x_k1, ambient, out_of, parts)
    with torch.no_grad():
        noise = torch.randn(x_k1.shape, generator=generator, device=x_k1.device, dtype=x_k1.dtype)
        v_raw = torch.where((k + 1 < N).unsqueeze(1), (x_k2 - x_k1) / h_next, noise)
        v_hat = P_v(v_raw)
    s = model(x_k1, v_hat, k + 1)
    mu = x_k1 - h * (a * v_hat + h * s)
    r = P(x_k - mu) / (torch.sqrt(1 - a * a) * h)
    return 0.5 * r.pow(2).sum(dim=1)


def path_loss_terms(model: ScoreModel, constraint: Constraint, schedule: NoiseSchedule, dyn: DynamicsConfig,
                    paths: Tensor, idx: Tensor, k: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    ambient = dyn.handling == "none"
    if dyn.kind == "overdamped":
        return overdamped_step_loss(model, constraint, schedule, paths, idx, k, ambient)
    return underdamped_step_loss(model, constraint, schedule, dyn.gamma, paths, idx, k, generator, ambient)


@torch.no_grad()
def full_path_loss(model: ScoreModel, constraint: Constraint, schedule: NoiseSchedule, dyn: DynamicsConfig,
                   paths: Tensor, seed: int = 0, chunk: int = 65536) -> float:
    """Exact Σ_k over every step of every path, averaged over paths (for validation)."""
    B, N = paths.shape[0], schedule.N
    idx = torch.arange(B, device=paths.device).repeat_interleave(N)
    k = torch.arange(N, device=paths.device).repeat(B)
    gen = torch.Generator(device=paths.device).manual_seed(seed)
    total = torch.zeros((), device=paths.device, dtype=paths.dtype)
    for s in range(0, len(idx), chunk):
        total = total + path_loss_terms(model, constraint, schedule, dyn, paths, idx[s:s + chunk], k[s:s + chunk], gen).sum()
    return float(total) / B
