"""Fitting a neural approximate mirror map (g_φ, f_ψ) to constrained data, and fine-tuning f on mirror samples.

Two Adam optimisers (lr 2e-4, β = (0.5, 0.999), no clipping), the non-negative ICNN weights clipped at 0 after
every step, EMA of both nets (0.999, with the usual warm-up min(decay, (1 + t)/(10 + t)) so short runs are not
stuck at the initial weights). ``fit_namm`` returns the EMA nets.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor, nn

from cdcore.constraints.base import Constraint
from cdcore.methods.namm.loss import constraint_distance, namm_loss
from cdcore.nets.images import ICNN, ResnetGenerator
from cdcore.constraints.images import as_nchw, nchw_to_flat
from cdcore.config.namm import NammCfg, ScaleCfg
from cdcore.methods.ema import EMA
from cdcore.methods.errors import DivergenceError
from cdcore.methods.namm.evaluate import distances
from cdcore.methods.namm.sample import sample_mdm
from cdcore.metrics import mmd_rbf

ProgressFn = Callable[[int, dict], None]


def build_nets(channels: int, cfg: NammCfg) -> tuple[ICNN, ResnetGenerator]:
    g = ICNN(channels, cfg.icnn_filters, cfg.icnn_layers, alpha=cfg.alpha)
    f = ResnetGenerator(channels, cfg.f_filters, cfg.f_down, cfg.f_blocks, residual=cfg.f_residual,
                        activation=cfg.f_activation, dropout=cfg.f_dropout,
                        padding=cfg.f_padding)
    return g, f


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
    xs = as_nchw(x).to(dev)
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
    ms = as_nchw(mirror_samples).to(dev) if finetune else None
    if finetune:
        for p in g.parameters():
            p.requires_grad_(False)
    opt_f = torch.optim.Adam(f.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    opt_g = None if finetune else torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    g_ema, f_ema = EMA(g, cfg.ema), EMA(f, cfg.ema)
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
        f_ema.update(f, step)
        g_ema.update(g, step)
        history["step"].append(step)
        for k in ("loss", "cyc", "constr", "reg"):
            history[k].append(parts[k])
        if on_progress is not None and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            on_progress(step, parts)
    if finetune:
        for p in g.parameters():
            p.requires_grad_(True)
    g_ema.module.clamp_nonneg()
    return g_ema.module.eval(), f_ema.module.eval(), history


FINETUNE_SEED = 7  # seed + 7: the mirror samples f is fine-tuned on (and validated on); evaluation uses seed + 1


FINETUNE_CHUNK = 1024  # mirror samples per sampling batch (paper: 13,312 in 13 batches, seed + 7 + 1000·k)


def finetune_f(g: nn.Module, f: nn.Module, net_m: nn.Module, x_tr: np.ndarray, constraint, fcfg: NammCfg,
               sc: ScaleCfg, seed: int, device: torch.device) -> tuple[nn.Module, nn.Module, dict]:
    """Fine-tune f on mirror-diffusion samples (reference §1.6): g frozen, y = ỹ + σz, the NAMM loss of ``fcfg``.

    ``sc.finetune_n + sc.finetune_val`` mirror samples ỹ are drawn from the mirror score model with seed
    ``seed + FINETUNE_SEED`` (batches of ``FINETUNE_CHUNK``, the k-th with 1000·k added; the evaluation samples use
    ``seed + 1``); the first ``finetune_n`` are fitted on,
    the last ``finetune_val`` are held out for the diagnostics: ℓ(f(ỹ)) and MMD of f(ỹ) against the *training*
    images, before and after (no test data involved). Returns (g, f fine-tuned (EMA), info).
    """
    H, W, C = x_tr.shape[1:]
    t0 = time.perf_counter()
    n_all = sc.finetune_n + sc.finetune_val
    ys = torch.cat([sample_mdm(net_m, (C, H, W), min(FINETUNE_CHUNK, n_all - i), steps=sc.sample_steps,
                               seed=seed + FINETUNE_SEED + 1000 * (i // FINETUNE_CHUNK))[0]
                    for i in range(0, n_all, FINETUNE_CHUNK)])
    ys = ys.permute(0, 2, 3, 1).contiguous()  # NHWC, as fit_namm takes
    y_fit, y_val = ys[: sc.finetune_n], ys[sc.finetune_n:]
    t1 = time.perf_counter()
    f_before = copy.deepcopy(f)  # fit_namm trains the given f in place and returns its EMA copy
    g2, f2, hist = fit_namm(x_tr, constraint, fcfg, seed=seed, init=(g, f), mirror_samples=y_fit, device=device)
    t2 = time.perf_counter()
    tr_flat = x_tr.reshape(len(x_tr), -1).astype(np.float64)
    info: dict[str, Any] = {"steps": fcfg.steps, "n_fit": len(y_fit), "n_val": len(y_val),
                            "sample_s": t1 - t0, "fit_s": t2 - t1, "lam_constr": fcfg.lam_constr,
                            "lam_cyc": fcfg.lam_cyc, "sigma_max": fcfg.sigma_max, "lr": fcfg.lr,
                            "loss_last": float(np.mean(hist["loss"][-20:]))}
    with torch.no_grad():
        yv = y_val.permute(0, 3, 1, 2).to(next(f2.parameters()).device)
        info["val_constr_mirror"] = float(distances(constraint, yv).mean()) if len(yv) else float("nan")
        for tag, ff in (("before", f_before.eval()), ("after", f2)):
            xv = ff(yv) if len(yv) else yv
            info[f"val_constr_{tag}"] = float(distances(constraint, xv).mean()) if len(xv) else float("nan")
            flat = nchw_to_flat(xv).double().cpu().numpy()
            info[f"val_mmd_{tag}"] = mmd_rbf(flat, tr_flat, seed=seed) if len(flat) > 1 else float("nan")
    info["finetune_s"] = time.perf_counter() - t0
    return g2, f2, info
