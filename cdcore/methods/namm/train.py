"""Mirror diffusion's score model: a VP-SDE ε-model trained on ỹ = g(x) (sampling: :mod:`cdcore.methods.namm.sample`).

VP-SDE with β(t) = β_min + t(β_max − β_min), β ∈ [0.1, 20], t ∈ [eps_t, 1], eps_t = 1e-3 (reference §1.4).
The net predicts ε (score = −ε/s_t); loss = mean ‖ε_θ(a_t y + s_t ε, t) − ε‖² (continuous-time DSM in ε form).
Data are not centred (as in the reference).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor, nn

from cdcore.nets.images import ICNN, ScoreUNet
from cdcore.config.namm import MdmCfg
from cdcore.dynamics.schedules import VPSDE, bcast
from cdcore.methods.ema import EMA
from cdcore.methods.errors import DivergenceError, check_loss


@torch.no_grad()
def mirror_data(g: ICNN, x: np.ndarray | Tensor, batch: int = 256) -> Tensor:
    """ỹ = g(x) for images (N, H, W, C) -> (N, C, H, W) float32."""
    xs = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x, dtype=torch.float32)
    xs = xs.permute(0, 3, 1, 2).to(next(g.parameters()).device)
    return torch.cat([g.g(xs[i:i + batch]).detach() for i in range(0, xs.shape[0], batch)])


def fit_mdm(y: Tensor, cfg: MdmCfg, seed: int = 0,
            on_progress: Optional[Callable[[int, dict], None]] = None,
            device: Optional[torch.device | str] = None) -> tuple[nn.Module, dict[str, list]]:
    """Train ε_θ on mirror data y (N, C, H, W); returns the EMA net (eval mode) and the per-step loss history.

    ``device`` (default CPU) holds data and net; indices are drawn on the CPU, t and ε on the device.
    """
    torch.manual_seed(seed)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    dgen = gen if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(seed)
    sde = VPSDE(cfg.beta_min, cfg.beta_max, cfg.eps_t)
    y = y.to(dev)
    net = ScoreUNet(y.shape[1], nf=cfg.nf, padding=cfg.padding).to(dev)
    ema = EMA(net, cfg.ema)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    hist: dict[str, list] = {"step": [], "loss": []}
    for step in range(cfg.steps):
        idx = torch.randint(y.shape[0], (min(cfg.batch_size, y.shape[0]),), generator=gen)
        y0 = y[idx]
        t = cfg.eps_t + (1 - cfg.eps_t) * torch.rand(y0.shape[0], generator=dgen, device=dev)
        a, s = sde.marginal(t)
        eps = torch.randn(y0.shape, generator=dgen, device=dev)
        loss = (net(bcast(a, y0) * y0 + bcast(s, y0) * eps, t) - eps).pow(2).mean()
        if not torch.isfinite(loss):
            raise DivergenceError(f"score loss is not finite at step {step}; lower the score model's lr or raise its "
                                  "warm-up (MdmCfg.lr, MdmCfg.warmup)")
        if cfg.warmup:
            for grp in opt.param_groups:
                grp["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        ema.update(net, step)
        hist["step"].append(step)
        hist["loss"].append(float(loss.detach()))
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            check_loss(hist["loss"][-1], hist["loss"][0], step, "Lower the score model's lr (MdmCfg.lr) or raise "
                       "its warm-up (MdmCfg.warmup)")
            if on_progress is not None:
                on_progress(step, {"loss": hist["loss"][-1]})
    return ema.module.eval(), hist


__all__ = ["fit_mdm", "mirror_data"]
