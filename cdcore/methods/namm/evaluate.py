"""How close NAMM gets to its constraint: per-sample constraint distances of images, the fixed-noise
diagnostics of a fitted map (cycle error, ℓ(f(g(x)+σz)) against ℓ(g(x)+σz)), and the evaluate stage's rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cdcore.constraints.base import Constraint
from cdcore.constraints.images import as_nchw, nchw_to_flat
from cdcore.methods.namm.loss import constraint_distance
from cdcore.metrics import mmd_rbf
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


def flat_distances(constraint, flat: np.ndarray, shape: list[int]) -> np.ndarray:
    """Per-sample ℓ_constr of the data file's flat NHWC rows."""
    x = torch.as_tensor(np.ascontiguousarray(flat.reshape(len(flat), *shape).astype(np.float32))).permute(0, 3, 1, 2)
    return distances(constraint, x)


def evaluation_rows(dataset: str, groups: dict[str, dict[str, Any]], splits: dict[str, np.ndarray],
                    attrs: dict[str, Any], constraint, seed: int
                    ) -> tuple[list[dict[str, Any]], np.ndarray, dict[str, np.ndarray]]:
    """A row per sampler: MMD to the test split (train vs test as the floor) and the samples' constraint
    distances beside the held-out data's; also the distances themselves (test, per sampler) for the figure."""
    shape = attrs["shape"]
    test = splits["test"].astype(np.float64)
    d_test = flat_distances(constraint, splits["test"], shape)
    n_floor = min(len(splits["train"]), len(test))
    floor = mmd_rbf(splits["train"][:n_floor].astype(np.float64), test, seed=seed)
    rows, shown = [], {}
    for sampler, grp in groups.items():
        ok = ~grp["dropped"].astype(bool)
        x = grp["x"][ok]
        d = flat_distances(constraint, x, shape)
        shown[sampler] = d
        rows.append({
            "dataset": dataset, "sampler": sampler, "method": "namm", "n_samples": int(len(grp["x"])),
            "metric": "mmd", "score": mmd_rbf(x.astype(np.float64), test, seed=seed) if len(x) > 1 else float("nan"),
            "score_floor": floor, "score_reference": float("nan"), "score_target": float("nan"),
            "jsd": float("nan"), "jsd_floor": float("nan"), "jsd_uniform": float("nan"),
            "constraint_mean": float(d.mean()), "constraint_median": float(np.median(d)),
            "data_constraint_mean": float(d_test.mean()),
            "violation_max": float(d.max()) if len(d) else float("nan"),
            "violation_mean": float(d.mean()) if len(d) else float("nan"),
            "infeasible_rate": float((d > attrs["generator_tol"]).mean()) if len(d) else float("nan"),
            "drop_rate": float((~ok).mean()), "nonfinite": int((~ok).sum()),
            "nfe": int(grp["nfe"]), "newton_iters": 0.0, "wall_s": float(grp["wall_s"]),
            "peak_mem_mb": float(grp["peak_mem_mb"]), "device": grp["device"]})
    return rows, d_test, shown
