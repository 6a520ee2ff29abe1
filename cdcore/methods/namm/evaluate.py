"""How close NAMM gets to its constraint: per-sample constraint distances of images, and the fixed-noise
diagnostics of a fitted map (cycle error, ℓ(f(g(x)+σz)) against ℓ(g(x)+σz))."""

from __future__ import annotations


import numpy as np
import torch
from torch import Tensor, nn

from cdcore.constraints.base import Constraint
from cdcore.constraints.images import as_nchw, nchw_to_flat
from cdcore.methods.namm.loss import constraint_distance
from cdcore.nets.images import ICNN


@torch.no_grad()
def distances(constraint, x_nchw: Tensor, batch: int = 256) -> np.ndarray:
    """Per-sample ℓ_constr (float64 numpy) of NCHW images, computed in batches on their device."""
    out = [constraint_distance(constraint, nchw_to_flat(x_nchw[i:i + batch])).double().cpu()
           for i in range(0, x_nchw.shape[0], batch)]
    return torch.cat(out).numpy()


@torch.no_grad()
def evaluate_namm(g: ICNN, f: nn.Module, x: np.ndarray | Tensor, constraint: Constraint, sigma_max: float,
                  seed: int = 0) -> dict[str, float]:
    """Fixed-noise diagnostics on images (N, H, W, C): cycle loss, ℓ(f(g(x)+σz)) vs ℓ(g(x)+σz), ℓ(f(g(x))).

    Runs on the device of g's parameters (the noise is drawn on the CPU, so it is the same on every device).
    """
    dev = next(g.parameters()).device
    xs = as_nchw(x).to(dev)
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
