"""Run one landing benchmark: train the models once, then every sampler on the same work.

Samplers (same network size, schedule, N, split and metrics):
OLLA / ULLA (landing), OLLA-P / ULLA-P (Newton projection), ambient diffusion
followed by one final projection (the cost reference), and for sets with
inequalities the Metropolis / reflected step of Fishman et al. (2023).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

import numpy as np
import torch

from cdcore.benchmarks import Benchmark, BenchmarkDataMissing, Paths
from cdcore.dynamics import forward_paths
from cdcore.methods.landing import dynamics_from, sample_landing, schedule_from, train_landing
from cdcore.metrics import mmd_rbf, sliced_wasserstein
from cdcore.profiling import measure

RowFn = Callable[[dict], None]


def _sampler_specs(bench: Benchmark, has_ineq: bool) -> list[tuple[str, str, str]]:
    """(sampler name, model key, handling)."""
    specs = [("OLLA", "od", "landing"), ("OLLA-P", "od", "projection"),
             ("ULLA", "ud", "landing"), ("ULLA-P", "ud", "projection"),
             ("ambient+proj", "ambient", "none")]
    if has_ineq:
        specs.append(("reflected", "od", "reject"))
    return specs


def _gaussian_prior(x_end: torch.Tensor) -> Callable[[int, torch.Generator], torch.Tensor]:
    """The ambient chain's terminal law approximated by a Gaussian fitted to simulated forward ends."""
    mu = x_end.mean(0)
    L = torch.linalg.cholesky(torch.cov(x_end.T) + 1e-6 * torch.eye(x_end.shape[1], device=x_end.device, dtype=x_end.dtype))

    def prior(n: int, gen: torch.Generator) -> torch.Tensor:
        return mu + torch.randn(n, len(mu), generator=gen, device=mu.device, dtype=mu.dtype) @ L.T

    return prior


def run_benchmark(bench: Benchmark, scale: str, device: torch.device, paths: Paths, seed: int = 0,
                  on_row: Optional[RowFn] = None, log: Callable[[str], None] = print) -> dict:
    """Returns {"benchmark", "rows": [...], "ratios": {...}} or {"benchmark", "skipped": reason}."""
    try:
        train, val, test = bench.load(seed, paths)
    except BenchmarkDataMissing as e:
        return {"benchmark": bench.name, "skipped": str(e), "rows": [], "ratios": {}}
    constraint = bench.make_constraint()
    data_violation = float(constraint.violation(torch.as_tensor(np.concatenate([train, test]), dtype=torch.float64)).max())
    sc = bench.scales[scale]
    x_tr = torch.as_tensor(train[: sc.max_train], device=device)
    x_va = torch.as_tensor(val, device=device)
    mcfg, tcfg = bench.model_cfg(scale), bench.train_cfg(scale)

    models = {}
    t0 = time.perf_counter()
    for key, sched_cfg, dyn_cfg, handling in (("od", bench.od_schedule, bench.od_dynamics, "landing"),
                                              ("ud", bench.ud_schedule, bench.ud_dynamics, "landing"),
                                              ("ambient", bench.od_schedule, bench.od_dynamics, "none")):
        schedule = schedule_from(sched_cfg)
        out = train_landing(constraint, x_tr, x_va, schedule, dyn_cfg, mcfg, tcfg, seed=seed, device=device,
                            handling=handling)
        models[key] = (out.model, schedule, dyn_cfg)
        log(f"  {bench.name}: trained {key} model ({tcfg.steps} steps, {out.wall_s:.1f}s)")
    train_s = time.perf_counter() - t0

    amb_model, amb_sched, amb_dyn = models["ambient"]
    fwd = forward_paths(constraint, x_tr, amb_sched, dynamics_from(amb_dyn, "none"),
                        generator=torch.Generator(device=device).manual_seed(seed), keep_paths=False)
    amb_prior = _gaussian_prior(fwd.x)

    rows = []
    ref = np.concatenate([train, val])
    for name, key, handling in _sampler_specs(bench, constraint.n_ineq > 0):
        model, schedule, dyn_cfg = models[key]
        prior = amb_prior if handling == "none" else None
        kw = dict(handling=handling, seed=seed + 1, device=device, prior=prior)
        sample_landing(model, constraint, schedule, dyn_cfg, 8, **kw)  # warm-up: allocator, kernels
        with measure(device) as m:
            res = sample_landing(model, constraint, schedule, dyn_cfg, sc.n_samples, **kw)
        x = res.x.double().cpu()
        dropped = res.dropped.cpu().numpy()
        kept = x[~res.dropped.cpu()]
        finite = torch.isfinite(kept).all(dim=1)
        kept = kept[finite]
        viol = constraint.violation(kept).numpy() if len(kept) else np.array([np.inf])
        k_np = kept.numpy()
        quality = bench.quality(k_np, test, ref) if len(k_np) > 1 else float("nan")
        row = {
            "benchmark": bench.name, "sampler": name, "dynamics": dyn_cfg.kind, "handling": handling,
            "device": str(device), "n_samples": sc.n_samples,
            "jsd": quality if bench.metric_name == "jsd" else float("nan"),
            "mmd": mmd_rbf(k_np, test) if len(k_np) > 1 else float("nan"),
            "sliced_w": sliced_wasserstein(k_np, test) if len(k_np) > 1 else float("nan"),
            "quality": quality, "quality_metric": bench.metric_name,
            "violation_max": float(viol.max()), "violation_mean": float(viol.mean()),
            "infeasible_rate": float((viol > 1e-4).mean()),
            "drop_rate": float(dropped.mean()) + float((~finite).sum()) / max(len(dropped), 1),
            "nfe": res.nfe, "newton_iters": float(res.newton_iters.float().mean()),
            "wall_s": m.wall_s, "peak_mem_mb": m.peak_mem_mb,
        }
        rows.append(row)
        if on_row:
            on_row(row)
        log(f"  {bench.name:12s} {name:12s} {bench.metric_name} {quality:.4f}  viol {row['violation_max']:.1e}  "
            f"drop {row['drop_rate']:.3f}  {m.wall_s:.3f}s")
    by = {r["sampler"]: r for r in rows}
    floor = bench.quality(train[: len(test) * 4], test, ref) if len(train) > 1 else float("nan")
    ratios = {
        "landing_over_unconstrained_wall": by["OLLA"]["wall_s"] / by["ambient+proj"]["wall_s"],
        "projection_over_landing_wall": by["OLLA-P"]["wall_s"] / by["OLLA"]["wall_s"],
        "ulla_projection_over_landing_wall": by["ULLA-P"]["wall_s"] / by["ULLA"]["wall_s"],
        "landing_quality_over_projection": _safe_ratio(by["OLLA"]["quality"], by["OLLA-P"]["quality"]),
        "ulla_nfe_over_olla": by["ULLA"]["nfe"] / by["OLLA"]["nfe"],
        "ulla_quality_minus_olla": by["ULLA"]["quality"] - by["OLLA"]["quality"],
        "quality_floor_train_vs_test": floor,
        "data_violation_max": data_violation,
        "train_s": train_s,
    }
    return {"benchmark": bench.name, "rows": rows, "ratios": ratios}


def _safe_ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(b) and b != 0 else float("nan")
