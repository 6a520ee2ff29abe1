"""Sampling NAMM: the reverse VP-SDE in mirror space mapped back through f, and mirror DPS for inverse problems.

Sampling: reverse-SDE Euler–Maruyama from N(0, I) (the loop is :func:`cdcore.dynamics.vp_reverse_sde`), no
corrector, the last step returns the mean; then x = f(ỹ). Mirror DPS (reference ``dps.py``): DDPM-ancestral
steps on the same schedule with the measurement gradient ζ ∇_{x_t} ‖(y − A(f(x̂0)))/σ_y‖₂ (norm, not squared);
``mirror=False`` gives vanilla DPS (A(x̂0)) and ``constraint_weight > 0`` adds w·ℓ_constr(x̂0) (CG-DPS).
"""

from __future__ import annotations

from typing import Callable, Literal, Optional

import torch
from torch import Tensor, nn

from cdcore.constraints.base import Constraint
from cdcore.constraints.images import nchw_to_flat
from cdcore.dynamics.result import Callback
from cdcore.dynamics.schedules import VPSDE, bcast
from cdcore.dynamics.unconstrained import vp_reverse_sde
from cdcore.methods.errors import DivergenceError
from cdcore.methods.namm.loss import constraint_distance


@torch.no_grad()
def sample_mdm(net: nn.Module, shape: tuple[int, int, int], n: int, steps: int = 1000, seed: int = 0,
               f: Optional[nn.Module] = None, sde: Optional[VPSDE] = None,
               callback: Optional[Callback] = None) -> tuple[Tensor, Optional[Tensor]]:
    """Reverse-SDE Euler–Maruyama from N(0, I) at t = 1 to eps_t. Returns (ỹ (n, C, H, W), f(ỹ) or None).

    Runs on the device of the net's parameters.
    """
    sde = sde or VPSDE()
    dev = next(net.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    x = torch.randn(n, *shape, generator=gen, device=dev)
    res = vp_reverse_sde(net, x, sde, steps, generator=gen, callback=callback)
    if bool(res.dropped.any()):
        raise DivergenceError(f"mirror-space sampling produced NaN/Inf in {int(res.dropped.sum())} of {n} samples; "
                              "the score model diverged")
    y = res.x
    return y, (f(y) if f is not None else None)


def mirror_dps(
    net: nn.Module,
    f: Optional[nn.Module],
    measure: Callable[[Tensor], Tensor],
    y_obs: Tensor,
    shape: tuple[int, int, int],
    n: int,
    sigma_y: float = 0.2,
    zeta: float | Tensor = 0.05,
    steps: int = 1000,
    mirror: bool = True,
    constraint: Optional[Constraint] = None,
    constraint_weight: float | Tensor = 0.0,
    seed: int = 0,
    sde: Optional[VPSDE] = None,
    constraint_reduction: Literal["mean", "sum"] = "mean",
    zeta_schedule: Literal["constant", "sqrt_abar"] = "constant",
) -> Tensor:
    """Posterior samples x (n, C, H, W) given y_obs = A(x) + noise; A = ``measure`` on NCHW images.

    mirror=True: loss on A(f(x̂0)) and the final mirror sample is mapped by f (Mirror DPS); mirror=False:
    vanilla DPS on x directly (f ignored), plus the constraint term w·ℓ(x̂0) if a constraint is given (CG-DPS).

    ``y_obs`` broadcasts against A(x) (one observation for all samples, or one per sample). ``zeta`` and
    ``constraint_weight`` are floats or per-sample tensors (n,), so a sweep over them runs as one batch; the
    samples never interact (the measurement loss is a sum of per-sample norms). ``constraint_reduction``:
    "mean" (default, as before) adds w·mean_i ℓ(x̂0_i), whose per-sample gradient shrinks as 1/n;
    "sum" adds Σ_i w_i ℓ(x̂0_i), a per-sample weight that does not depend on the batch size.
    ``zeta_schedule``: "constant" (the reference) uses ζ at every step; "sqrt_abar" uses ζ_t = ζ·√ᾱ_t, which
    cancels the 1/√ᾱ_t of Tweedie's x̂0 = (x_t − s_t ε)/√ᾱ_t in the guidance gradient, so the first steps
    (√ᾱ_1 ≈ 0.007, where x̂0 is mostly the score net's error) do not throw x_t off; for t → 0 both agree.
    Runs on the device of the net's parameters; the noise is drawn on the CPU (same samples on every device).
    """
    sde = sde or VPSDE()
    dev = next(net.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=gen).to(dev)
    ts = torch.linspace(1.0, sde.eps_t, steps + 1, device=dev)
    zeta_b = bcast(zeta.to(dev, x.dtype), x) if isinstance(zeta, Tensor) else zeta
    w = constraint_weight.to(dev, x.dtype) if isinstance(constraint_weight, Tensor) else constraint_weight
    use_constraint = constraint is not None and bool(torch.as_tensor(constraint_weight).gt(0).any())
    if constraint_reduction not in ("mean", "sum"):
        raise ValueError(f"constraint_reduction must be 'mean' or 'sum', got {constraint_reduction!r}")
    if zeta_schedule not in ("constant", "sqrt_abar"):
        raise ValueError(f"zeta_schedule must be 'constant' or 'sqrt_abar', got {zeta_schedule!r}")
    for i in range(steps):
        t, t_prev = ts[i].expand(n), ts[i + 1].expand(n)
        a, s = sde.marginal(t)
        a_prev, _ = sde.marginal(t_prev)
        abar, abar_prev = a**2, a_prev**2
        alpha = abar / abar_prev
        beta = 1 - alpha
        x = x.detach().requires_grad_(True)
        eps = net(x, t)
        x0 = (x - bcast(s, x) * eps) / bcast(a, x)
        pred = f(x0) if (mirror and f is not None) else x0
        res = (y_obs - measure(pred)) / sigma_y
        loss = res.reshape(n, -1).norm(dim=1).sum()
        if use_constraint:
            wd = w * constraint_distance(constraint, nchw_to_flat(x0))
            loss = loss + (wd.mean() if constraint_reduction == "mean" else wd.sum())
        grad = torch.autograd.grad(loss, x)[0]
        with torch.no_grad():
            c1 = bcast(abar_prev.sqrt() * beta / (1 - abar), x)
            c2 = bcast(alpha.sqrt() * (1 - abar_prev) / (1 - abar), x)
            var = bcast(beta * (1 - abar_prev) / (1 - abar), x)
            noise = torch.randn(x.shape, generator=gen).to(dev) if i < steps - 1 else torch.zeros_like(x)
            step = zeta_b * grad if zeta_schedule == "constant" else zeta_b * bcast(a, x) * grad
            x = c1 * x0 + c2 * x + var.sqrt() * noise - step
    x = x.detach()
    if mirror and f is not None:
        with torch.no_grad():
            x = f(x)
    return x
