"""Fitting a neural approximate mirror map (g_φ, f_ψ) to constrained data.

Two Adam optimisers (lr 2e-4, β = (0.5, 0.999), no clipping), the non-negative ICNN weights clipped at 0 after
every step, EMA of both nets (0.999, with the usual warm-up min(decay, (1 + t)/(10 + t)) so short runs are not
stuck at the initial weights). ``fit_namm`` returns the EMA nets.
"""

from __future__ import annotations

import copy
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor, nn

from cdcore.constraints.base import Constraint
from cdcore.methods.namm.loss import constraint_distance, namm_loss
from cdcore.nets.images import ICNN, ResnetGenerator
from cdcore.constraints.images import nchw_to_flat
from cdcore.config.namm import NammCfg
from cdcore.methods.errors import DivergenceError

ProgressFn = Callable[[int, dict], None]


def build_nets(channels: int, cfg: NammCfg) -> tuple[ICNN, ResnetGenerator]:
    g = ICNN(channels, cfg.icnn_filters, cfg.icnn_layers, alpha=cfg.alpha)
    f = ResnetGenerator(channels, cfg.f_filters, cfg.f_down, cfg.f_blocks, residual=cfg.f_residual,
                        activation=cfg.f_activation, dropout=cfg.f_dropout,
                        padding=cfg.f_padding)
    return g, f


def _as_nchw(x: np.ndarray | Tensor) -> Tensor:
    """(N, H, W, C) images (numpy or tensor) -> float32 (N, C, H, W)."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x, dtype=torch.float32)
    if t.dim() != 4:
        raise ValueError(f"expected images (N, H, W, C), got shape {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def _ema_update(ema: nn.Module, live: nn.Module, decay: float) -> None:
    for pe, pl in zip(ema.parameters(), live.parameters()):
        pe.lerp_(pl, 1.0 - decay)
    for be, bl in zip(ema.buffers(), live.buffers()):
        be.copy_(bl)


@torch.no_grad()
def evaluate_namm(g: ICNN, f: nn.Module, x: np.ndarray | Tensor, constraint: Constraint, sigma_max: float,
                  seed: int = 0) -> dict[str, float]:
    """Fixed-noise diagnostics on images (N, H, W, C): cycle loss, ℓ(f(g(x)+σz)) vs ℓ(g(x)+σz), ℓ(f(g(x))).

    Runs on the device of g's parameters (the noise is drawn on the CPU, so it is the same on every device).
    """
    dev = next(g.parameters()).device
    xs = _as_nchw(x).to(dev)
    was = g.training, f.training
    g.eval(), f.eval()
    gen = torch.Generator().manual_seed(seed)
    gx = g.g(xs)
    sigma = sigma_max * torch.rand(xs.shape[0], generator=gen).view(-1, 1, 1, 1).to(dev)
    y = gx + sigma * torch.randn(xs.shape, generator=gen).to(dev)
    fy, fgx = f(y), f(gx)
    out = {
        "cyc": float(0.5 * (fgx - xs).abs().mean() + 0.5 * (g.g(fy) - y).abs().mean()),
        "fwd_cyc": float((fgx - xs).abs().mean()),
        "constr_f_noisy": float(constraint_distance(constraint, nchw_to_flat(fy)).mean()),
        "constr_noisy_mirror": float(constraint_distance(constraint, nchw_to_flat(y)).mean()),
        "constr_f_g": float(constraint_distance(constraint, nchw_to_flat(fgx)).mean()),
    }
    g.train(was[0]), f.train(was[1])
    return out


def fit_namm(
    x: np.ndarray | Tensor,
    constraint: Constraint,
    cfg: NammCfg,
    seed: int = 0,
    on_progress: Optional[ProgressFn] = None,
    init: Optional[tuple[ICNN, nn.Module]] = None,
    mirror_samples: Optional[np.ndarray | Tensor] = None,
    device: Optional[torch.device | str] = None,
) -> tuple[ICNN, nn.Module, dict[str, list]]:
    """Train (g_φ, f_ψ) on images x (N, H, W, C) satisfying ``constraint`` (flattened-HWC constraint).

    Returns the EMA nets (eval mode) and a history {"step", "loss", "cyc", "constr", "reg"} with one entry per
    step. ``init`` resumes from given nets; ``mirror_samples`` (N', H, W, C) switches to fine-tuning: g is
    frozen and y = ỹ + σz with ỹ drawn from these mirror-space samples (the reference's ``--finetune``).
    ``device`` (default CPU) holds the data and nets; batches are drawn by a CPU generator, the noise by one on
    the device (the same generator on the CPU, so CPU runs do not depend on this argument).
    """
    torch.manual_seed(seed)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    ngen = gen if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(seed)
    xs = _as_nchw(x).to(dev)
    if cfg.check_data:
        with torch.no_grad():
            worst = float(constraint_distance(constraint, nchw_to_flat(xs)).max())
        if not worst <= cfg.data_tol:
            raise ValueError(f"training data violate the constraint: max ℓ_constr {worst:.3g} > data_tol "
                             f"{cfg.data_tol:g} (set check_data=False to train anyway)")
    g, f = init if init is not None else build_nets(xs.shape[1], cfg)
    g, f = g.to(dev), f.to(dev)
    g.train(), f.train()
    finetune = mirror_samples is not None
    ms = _as_nchw(mirror_samples).to(dev) if finetune else None
    if finetune:
        for p in g.parameters():
            p.requires_grad_(False)
    opt_f = torch.optim.Adam(f.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    opt_g = None if finetune else torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    g_ema, f_ema = copy.deepcopy(g), copy.deepcopy(f)
    history: dict[str, list] = {"step": [], "loss": [], "cyc": [], "constr": [], "reg": []}
    N, bs = xs.shape[0], min(cfg.batch_size, xs.shape[0])
    perm, pos = torch.randperm(N, generator=gen), 0
    for step in range(cfg.steps):
        if pos + bs > N:
            perm, pos = torch.randperm(N, generator=gen), 0
        xb = xs[perm[pos:pos + bs]]
        pos += bs
        mb = ms[torch.randint(ms.shape[0], (bs,), generator=gen)] if finetune else None
        loss, parts = namm_loss(g, f, xb, constraint, sigma_max=cfg.sigma_max, lam_cyc=cfg.lam_cyc,
                                lam_constr=cfg.lam_constr, lam_reg=cfg.lam_reg, fixed_sigma=cfg.fixed_sigma,
                                mirror_samples=mb, generator=ngen)
        if not np.isfinite(parts["loss"]):
            raise DivergenceError(f"NAMM loss is not finite at step {step}: {parts}; lower NammCfg.lr or lam_constr")
        opt_f.zero_grad(set_to_none=True)
        if opt_g is not None:
            opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_f.step()
        if opt_g is not None:
            opt_g.step()
            g.clamp_nonneg()
        decay = min(cfg.ema, (1.0 + step) / (10.0 + step))
        _ema_update(f_ema, f, decay)
        _ema_update(g_ema, g, decay)
        history["step"].append(step)
        for k in ("loss", "cyc", "constr", "reg"):
            history[k].append(parts[k])
        if on_progress is not None and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            on_progress(step, parts)
    if finetune:
        for p in g.parameters():
            p.requires_grad_(True)
    g_ema.clamp_nonneg()
    g_ema.eval(), f_ema.eval()
    return g_ema, f_ema, history
