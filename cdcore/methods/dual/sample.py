"""Ancestral DDPM sampling of a trained ε-model, batched, on the device (the loop is
:func:`cdcore.dynamics.ddpm_ancestral`)."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from cdcore.config.dual import SamplerCfg
from cdcore.dynamics.schedules import DDPMCoefficients
from cdcore.dynamics.unconstrained import ddpm_ancestral
from cdcore.methods.errors import DivergenceError
from cdcore.methods.dual.model import Denoiser


@torch.no_grad()
def sample_ddpm(model: Denoiser, n: int, seed: int = 0, device: torch.device | str = "cpu",
                labels: Optional[Tensor | np.ndarray] = None, cfg: Optional[SamplerCfg] = None) -> Tensor:
    """Ancestral DDPM sampling x_T ~ N(0,I) → x_0 from the model's own schedule; returns (n, d) on CPU.

    With ``cfg.clip`` the posterior mean is formed from the clipped x̂_0 (data in
    [−1, 1]); ``labels`` (length n) are required by, and only by, a conditional model.
    The model is moved to ``device`` (in place, as ``nn.Module.to`` does).
    """
    cfg = cfg or SamplerCfg()
    device = torch.device(device)
    was_training = model.training
    model = model.to(device).eval()
    if bool(model.num_classes) != (labels is not None):
        raise ValueError("labels must be given for a class-conditional model and only for one")
    y_all = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if y_all is not None and len(y_all) != n:
        raise ValueError(f"{len(y_all)} labels for {n} samples")
    # schedule coefficients as Python floats, read off the device once: the step loop never syncs with the host
    coef = DDPMCoefficients.of(model.betas, model.abar, cfg.variance)
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for s in range(0, n, cfg.batch_size):
        b = min(cfg.batch_size, n - s)
        y = None if y_all is None else y_all[s:s + b].to(device)
        x = torch.randn((b, model.dim), generator=gen, device=device)
        res = ddpm_ancestral(lambda xt, t: model(xt, t, y), x, coef, cfg.clip, generator=gen)
        if bool(res.dropped.any()):
            raise DivergenceError("DDPM sampling produced NaN/Inf; the model diverged or the schedule is broken")
        out.append(res.x.float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, model.dim))
