"""The NAMM training loss (reference: berthyf96/namm ``losses.py:get_namm_loss_fn``).

Per batch x (NCHW, all on the constraint set)::

    x̃ = g(x);  σ_i ~ U(0, σ_max) (or σ_max if fixed);  y = x̃ + σ_i z   (or ỹ_MDM + σ_i z when fine-tuning)
    L_cyc    = ½ mean|f(g(x)) − x| + ½ mean|g(f(y)) − y|
    L_constr = mean_i ℓ_constr(f(y_i))
    L_reg    = mean|∇ψ(x)|                          ("sparse_icnn")
    L = λ_cyc L_cyc + λ_constr L_constr + λ_reg L_reg

Gradients flow through g into both cycle terms and the constraint term (y depends on g's parameters).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from cdcore.constraints.base import Constraint
from cdcore.nets.images import ICNN
from cdcore.constraints.images import nchw_to_flat


def constraint_distance(constraint: Constraint, x_flat: Tensor) -> Tensor:
    """Per-sample ℓ_constr (B,): the constraint's own ``distance`` (part of every constraint's protocol)."""
    return constraint.distance(x_flat)


def cycle_loss(icnn: ICNN, f: torch.nn.Module, x: Tensor, y: Tensor, gx: Optional[Tensor] = None) -> Tensor:
    """½ mean|f(g(x)) − x| + ½ mean|g(f(y)) − y|."""
    gx = icnn.g(x) if gx is None else gx
    return 0.5 * (f(gx) - x).abs().mean() + 0.5 * (icnn.g(f(y)) - y).abs().mean()


def sample_sigma(n: int, sigma_max: float, fixed: bool, like: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    if fixed:
        return like.new_full((n,), sigma_max)
    return sigma_max * torch.rand(n, generator=generator, dtype=like.dtype, device=like.device)


def namm_loss(
    icnn: ICNN,
    f: torch.nn.Module,
    x: Tensor,
    constraint: Constraint,
    sigma_max: float = 0.1,
    lam_cyc: float = 1.0,
    lam_constr: float = 1.0,
    lam_reg: float = 1e-3,
    fixed_sigma: bool = False,
    mirror_samples: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> tuple[Tensor, dict[str, float]]:
    """The total NAMM loss on a batch x (B, C, H, W) and its parts as floats.

    ``mirror_samples`` (same shape as x) replaces g(x) as the centre of the noisy points y (fine-tuning f on
    mirror-diffusion samples, g frozen by the caller).
    """
    gx = icnn.g(x)
    centre = gx if mirror_samples is None else mirror_samples
    sigma = sample_sigma(x.shape[0], sigma_max, fixed_sigma, x, generator).view(-1, *([1] * (x.dim() - 1)))
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    y = centre + sigma * z
    fy = f(y)
    l_cyc = 0.5 * (f(gx) - x).abs().mean() + 0.5 * (icnn.g(fy) - y).abs().mean()
    l_constr = constraint_distance(constraint, nchw_to_flat(fy)).mean()
    l_reg = ((gx - icnn.alpha * x) / (1.0 - icnn.alpha)).abs().mean()
    total = lam_cyc * l_cyc + lam_constr * l_constr + lam_reg * l_reg
    parts = {"loss": float(total.detach()), "cyc": float(l_cyc.detach()), "constr": float(l_constr.detach()),
             "reg": float(l_reg.detach())}
    return total, parts
