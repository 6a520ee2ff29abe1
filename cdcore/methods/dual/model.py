"""The ε-model of dual training and the DDPM regression batches every loss term is computed on."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from cdcore.config.dual import DDPMCfg, DenoiserCfg, DualCfg, ddpm_betas


class Denoiser(nn.Module):
    """ε̂_θ(x_t, t[, y]): residual MLP with a sinusoidal t-embedding (and a label embedding).

    The DDPM schedule lives in non-persistent buffers so that the loss and the
    sampler read it from the model and cannot disagree.
    """

    def __init__(self, dim: int, model: DenoiserCfg, schedule: DDPMCfg) -> None:
        super().__init__()
        self.dim, self.num_classes, self.schedule_cfg = dim, model.num_classes, schedule
        H, k = model.hidden, model.time_features
        self.register_buffer("freqs", torch.exp(-math.log(10_000.0) * torch.arange(k) / k).float(), persistent=False)
        betas = ddpm_betas(schedule)
        abar = torch.cumprod(1 - betas, 0)
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("abar", abar.float(), persistent=False)
        self.inp = nn.Linear(dim, H)
        self.temb = nn.Sequential(nn.Linear(2 * k, H), nn.SiLU(), nn.Linear(H, H))
        self.yemb = nn.Embedding(model.num_classes, H) if model.num_classes else None
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(H), nn.SiLU(), nn.Linear(H, H), nn.SiLU(), nn.Linear(H, H))
            for _ in range(model.depth))
        self.out = nn.Sequential(nn.LayerNorm(H), nn.SiLU(), nn.Linear(H, dim))

    @property
    def T(self) -> int:
        return self.schedule_cfg.T

    def forward(self, x: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tensor:
        ang = t.to(x.dtype).unsqueeze(1) * self.freqs
        e = self.temb(torch.cat([torch.sin(ang), torch.cos(ang)], dim=1))
        if self.yemb is not None:
            if y is None:
                raise ValueError("this denoiser is class-conditional: pass labels y")
            e = e + self.yemb(y)
        h = self.inp(x) + e
        for blk in self.blocks:
            h = h + blk(h + e)
        return self.out(h)


def build_denoiser(dim: int, cfg: DualCfg, seed: int = 0) -> Denoiser:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Denoiser(dim, cfg.model, cfg.schedule)


def q_sample(model: Denoiser, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    ab = model.abar[t - 1].unsqueeze(1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


@dataclass
class Draw:
    """One batch of network inputs and regression targets: loss = mean ‖ε̂_θ(xt, t, y) − target‖² / d."""

    xt: Tensor
    t: Tensor
    y: Optional[Tensor]
    target: Tensor


def draw_eps(model: Denoiser, x0: Tensor, y: Optional[Tensor], gen: torch.Generator) -> Draw:
    """DDPM ε-regression batch: t ~ U{t_min..T}, ε ~ N(0, I), x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε."""
    B = x0.shape[0]
    t = torch.randint(model.schedule_cfg.t_min, model.T + 1, (B,), generator=gen, device=x0.device)
    eps = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
    return Draw(q_sample(model, x0, t, eps), t, y, eps)


def draw_losses(model: Denoiser, draws: Sequence[Draw]) -> Tensor:
    """Mean loss of each draw, from one network call over their concatenation (rows are independent)."""
    if not draws:
        return torch.zeros(0)
    y = None
    if model.num_classes:                    # an unconditional model ignores labels the data may carry
        ys = [d.y for d in draws]
        if any(v is None for v in ys):
            raise ValueError("a class-conditional model needs labels in every batch (objective and constraints)")
        y = torch.cat(ys)
    pred = model(torch.cat([d.xt for d in draws]), torch.cat([d.t for d in draws]), y)
    per = (pred - torch.cat([d.target for d in draws])).pow(2).mean(dim=1)
    return torch.stack([seg.mean() for seg in per.split([d.xt.shape[0] for d in draws])])


def eps_loss(model: Denoiser, x0: Tensor, y: Optional[Tensor], gen: torch.Generator) -> Tensor:
    """Per-sample ‖ε̂_θ(x_t,t) − ε‖² / d with t ~ U{t_min..T} (L_simple, dim-averaged as F.mse_loss)."""
    d = draw_eps(model, x0, y, gen)
    return (model(d.xt, d.t, d.y) - d.target).pow(2).mean(dim=1)
