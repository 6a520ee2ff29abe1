"""The unconstrained loops: reverse VP-SDE Euler–Maruyama (mirror diffusion samples here, in mirror space)
and ancestral DDPM (dual training's sampler). Same shape as the landing loop (:func:`cdcore.dynamics.sample`):
a network callable, the prior points, the schedule, the options, a per-step callback, one
:class:`~cdcore.dynamics.result.SampleResult`; a trajectory that ends non-finite is marked ``dropped``."""

from __future__ import annotations

from typing import Callable, Optional

import math

import torch
from torch import Tensor

from cdcore.dynamics.result import Callback, SampleResult
from cdcore.dynamics.schedules import VPSDE, DDPMCoefficients, bcast

EpsFn = Callable[[Tensor, Tensor], Tensor]  # (x_t, t per sample) -> ε̂(x_t, t)


def _finite_rows(x: Tensor) -> Tensor:
    return torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)


@torch.no_grad()
def vp_reverse_sde(eps: EpsFn, x: Tensor, sde: VPSDE, steps: int, generator: Optional[torch.Generator] = None,
                   callback: Optional[Callback] = None) -> SampleResult:
    """Reverse-SDE Euler–Maruyama of a VP-SDE from t = 1 to eps_t in ``steps`` steps; score = −ε̂/s_t. The last
    step returns the mean (the denoised point), as the NAMM reference does; no corrector."""
    n = x.shape[0]
    ts = torch.linspace(1.0, sde.eps_t, steps, device=x.device)
    dt = -(1.0 - sde.eps_t) / steps
    mean = x
    for i, t in enumerate(ts):
        tb = t.expand(n)
        _, s = sde.marginal(tb)
        score = -eps(x, tb) / bcast(s, x)
        beta = bcast(sde.beta(tb), x)
        drift = -0.5 * beta * x - beta * score
        mean = x + drift * dt
        x = mean + (beta * -dt).sqrt() * torch.randn(x.shape, generator=generator, device=x.device)
        if callback is not None:
            callback(i + 1, mean)
    return SampleResult(x=mean, dropped=~_finite_rows(mean), nfe=steps)


@torch.no_grad()
def ddpm_ancestral(eps: EpsFn, x: Tensor, coef: DDPMCoefficients, clip: Optional[float] = None,
                   generator: Optional[torch.Generator] = None, callback: Optional[Callback] = None) -> SampleResult:
    """Ancestral DDPM sampling x_T → x_0 with t = T … 1 (1-based, as the ε-model is trained); with ``clip`` the
    posterior mean is formed from x̂_0 clipped to ±clip (data in [−clip, clip])."""
    T = len(coef.abar)
    for t in range(T, 0, -1):
        i = t - 1
        e = eps(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long))
        if clip is not None:
            x0 = ((x - math.sqrt(1 - coef.abar[i]) * e) / math.sqrt(coef.abar[i])).clamp(-clip, clip)
            mean = coef.c_x0[i] * x0 + coef.c_xt[i] * x
        else:
            mean = (x - coef.eps_coef[i] * e) / math.sqrt(coef.alphas[i])
        if t > 1:
            z = torch.randn(x.shape, generator=generator, device=x.device)
            x = mean + math.sqrt(coef.var[i]) * z
        else:
            x = mean
        if callback is not None:
            callback(T - i, x)
    return SampleResult(x=x, dropped=~_finite_rows(x), nfe=T)
