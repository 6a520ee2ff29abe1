"""Run one landing benchmark: train the models once, then every sampler on the same work.

Samplers (same network size, schedule, N, split and metrics):
OLLA / ULLA (landing), OLLA-P / ULLA-P (Newton projection), ambient diffusion
followed by one final projection (the cost reference), and for sets with
inequalities the Metropolis / reflected step of Fishman et al. (2023). Beside the rows, a prior diagnostic
per benchmark: how far each forward chain ends from its sampler's prior, and OLLA / ULLA over three seeds started
from the prior and from the forward's terminal law: what the prior mismatch costs each chain.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

import numpy as np
import torch

from cdcore.benchmarks import Benchmark, BenchmarkDataMissing, Paths
from cdcore.dynamics import forward_paths
from cdcore.methods.landing import (Precision, dynamics_from, forward_end_prior, sample_landing,
                                    sample_quality_selector, schedule_from, train_landing)
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


def _prior_diagnostics(bench: Benchmark, constraint, models: dict, x_va: torch.Tensor, test: np.ndarray,
                       ref: np.ndarray, n: int, seed: int, device: torch.device, row_quality: dict) -> dict:
    """Per dynamics: the forward's distance to the analytic prior, and OLLA / ULLA quality over three sampling
    seeds from that prior and from the forward's terminal law simulated from held-out data (same model, same
    metric as the rows): what the prior mismatch costs. A chain whose forward end keeps more of the data starts
    closer to it there, so a gap that closes from the forward's end does not by itself clear the reverse model.
    Where the rows start from the analytic prior, the first such seed is the row's own run (``row_quality``)."""
    out: dict = {}
    q = lambda x: bench.quality(x.double().cpu().numpy(), test, ref)  # noqa: E731
    gen = torch.Generator(device=device).manual_seed(seed + 7)
    prior_a = constraint.sample_prior(n, generator=gen, device=device).double().cpu().numpy()
    prior_b = constraint.sample_prior(n, generator=gen, device=device).double().cpu().numpy()
    out["prior_vs_prior"] = bench.quality(prior_a, prior_b, ref)
    # the benchmark's histogram metric at n samples can be blind to a low-frequency mismatch (earth's 30 × 30 lat/lon
    # JSD put both forward ends level with two uniform draws while 27 % / 37 % of the data's mean direction survived
    # the OD / UD forwards); the kernel MMD² sees it
    out["prior_vs_prior_mmd"] = mmd_rbf(prior_a, prior_b)
    for name, key in (("olla", "od"), ("ulla", "ud")):
        model, schedule, dyn_cfg = models[key]
        fwd_prior = forward_end_prior(constraint, x_va, schedule, dyn_cfg, pool=n, seed=seed + 11)
        ends = fwd_prior(n, gen).double().cpu().numpy()
        out[f"{name}_forward_end_vs_prior"] = bench.quality(ends, prior_a, ref)
        out[f"{name}_forward_end_vs_prior_mmd"] = mmd_rbf(ends, prior_a)
        for start, prior in (("prior", None), ("forward_end", fwd_prior)):
            first = [row_quality[name]] if prior is None and bench.prior == "analytic" else []
            vals = first + [q(sample_landing(model, constraint, schedule, dyn_cfg, n, seed=seed + 1 + i, device=device,
                                             prior=prior).x) for i in range(len(first), 3)]
            out[f"{name}_quality_from_{start}_seeds"] = vals
    for start in ("prior", "forward_end"):
        diff = np.subtract(out[f"ulla_quality_from_{start}_seeds"], out[f"olla_quality_from_{start}_seeds"])
        out[f"ulla_minus_olla_from_{start}_mean"] = float(diff.mean())
    return out


class _Starts:
    """Where each sampler starts: the benchmark's prior; every constrained sampler of one model starts alike."""

    def __init__(self, bench: Benchmark, constraint, specs: dict, x_tr: torch.Tensor, n: int, seed: int,
                 device: torch.device) -> None:
        self.bench, self.constraint, self.specs, self.x_tr, self.n, self.seed = bench, constraint, specs, x_tr, n, seed
        amb_sched, amb_dyn = specs["ambient"][:2]
        fwd = forward_paths(constraint, x_tr, amb_sched, dynamics_from(amb_dyn, "none"),
                            generator=torch.Generator(device=device).manual_seed(seed), keep_paths=False)
        self.ambient = _gaussian_prior(fwd.x)
        self.cache: dict = {}

    def __call__(self, key: str, handling: str):
        if self.bench.prior == "analytic":
            return self.ambient if handling == "none" else None
        chain = "none" if handling == "none" else "landing"
        if (key, chain) not in self.cache:
            schedule, dyn_cfg, _ = self.specs[key]
            self.cache[key, chain] = forward_end_prior(self.constraint, self.x_tr, schedule, dyn_cfg, handling=chain,
                                                       pool=self.n, seed=self.seed + 3)
        return self.cache[key, chain]


def _train_models(bench: Benchmark, scale: str, constraint, specs: dict, x_tr, x_va, val, ref, starts: _Starts,
                  seed: int, device: torch.device, log: Callable[[str], None]) -> dict:
    """The overdamped, underdamped and ambient models, each selected on validation samples where the scale asks."""
    sc, mcfg, tcfg = bench.scales[scale], bench.model_cfg(scale), bench.train_cfg(scale)
    models = {}
    for key, (schedule, dyn_cfg, handling) in specs.items():
        select = None
        if sc.selections > 1:  # the release's best-validation-JSD checkpoint: the model's own sampler on val
            select = sample_quality_selector(
                constraint, schedule, dyn_cfg, lambda x: bench.quality(x.double().cpu().numpy(), val, ref),
                min(sc.n_samples, 4 * len(val)), handling=handling, prior=starts(key, handling), seed=seed + 5,
                device=device)
        out = train_landing(constraint, x_tr, x_va, schedule, dyn_cfg, mcfg, tcfg, seed=seed, device=device,
                            handling=handling, select=select)
        models[key] = (out.model, schedule, dyn_cfg)
        chosen = f", best validation {bench.metric_name} at step {out.best_step}" if out.best_step else ""
        log(f"  {bench.name}: trained {key} model ({tcfg.steps} steps, {out.wall_s:.1f}s{chosen})")
    return models


def _sampler_row(bench: Benchmark, constraint, model_spec: tuple, name: str, handling: str, prec: str, prior,
                 n: int, test: np.ndarray, ref: np.ndarray, seed: int, device: torch.device) -> dict:
    """One sampler's row: warm-up, then the timed draw, scored on the test split."""
    model, schedule, dyn_cfg = model_spec
    kw = dict(handling=handling, seed=seed + 1, device=device, prior=prior, precision=prec)
    sample_landing(model, constraint, schedule, dyn_cfg, 8, **kw)  # warm-up: allocator, kernels
    with measure(device) as m:
        res = sample_landing(model, constraint, schedule, dyn_cfg, n, **kw)
    x = res.x.double().cpu()
    dropped = res.dropped.cpu().numpy()
    kept = x[~res.dropped.cpu()]
    finite = torch.isfinite(kept).all(dim=1)
    kept = kept[finite]
    viol = constraint.violation(kept).numpy() if len(kept) else np.array([np.inf])
    k_np = kept.numpy()
    quality = bench.quality(k_np, test, ref) if len(k_np) > 1 else float("nan")
    return {
        "benchmark": bench.name, "sampler": name, "dynamics": dyn_cfg.kind, "handling": handling,
        "device": str(device), "precision": prec, "n_samples": n, "prior": bench.prior,
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


def _ratios(by: dict, precision: str, floor: float, data_violation: float, train_s: float, diag: dict) -> dict:
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
        **diag,
    }
    if precision != "fp32":
        for name in ("OLLA", "ULLA"):
            low, full = by[f"{name} {precision}"], by[name]
            ratios[f"{name.lower()}_quality_{precision}_minus_fp32"] = low["quality"] - full["quality"]
            ratios[f"{name.lower()}_wall_{precision}_over_fp32"] = low["wall_s"] / full["wall_s"]
    return ratios


def _log_diagnostics(log: Callable[[str], None], name: str, diag: dict, secs: float) -> None:
    log(f"  {name}: forward end vs prior OD {diag['olla_forward_end_vs_prior']:.3f} "
        f"UD {diag['ulla_forward_end_vs_prior']:.3f} (prior vs prior {diag['prior_vs_prior']:.3f}; MMD² OD "
        f"{diag['olla_forward_end_vs_prior_mmd']:.4f} UD {diag['ulla_forward_end_vs_prior_mmd']:.4f} prior vs prior "
        f"{diag['prior_vs_prior_mmd']:.4f}); "
        f"ULLA - OLLA over 3 seeds: from the prior {diag['ulla_minus_olla_from_prior_mean']:+.3f}, "
        f"from the forward end {diag['ulla_minus_olla_from_forward_end_mean']:+.3f} ({secs:.1f}s)")


def run_benchmark(bench: Benchmark, scale: str, device: torch.device, paths: Paths, seed: int = 0,
                  on_row: Optional[RowFn] = None, log: Callable[[str], None] = print,
                  precision: Precision = "fp32") -> dict:
    """Returns {"benchmark", "rows": [...], "ratios": {...}} or {"benchmark", "skipped": reason}.

    Every row samples its network in fp32; another ``precision`` adds OLLA and ULLA rows of the same models with
    the network at that precision, and the quality difference to fp32 in the ratios."""
    try:
        train, val, test = bench.load(seed, paths)
    except BenchmarkDataMissing as e:
        return {"benchmark": bench.name, "skipped": str(e), "rows": [], "ratios": {}}
    constraint = bench.make_constraint()
    data_violation = float(constraint.violation(torch.as_tensor(np.concatenate([train, test]), dtype=torch.float64)).max())
    sc = bench.scales[scale]
    x_tr = torch.as_tensor(train[: sc.max_train], device=device)
    x_va = torch.as_tensor(val, device=device)
    specs = {"od": (schedule_from(bench.od_schedule), bench.od_dynamics, "landing"),
             "ud": (schedule_from(bench.ud_schedule), bench.ud_dynamics, "landing"),
             "ambient": (schedule_from(bench.od_schedule), bench.od_dynamics, "none")}
    starts = _Starts(bench, constraint, specs, x_tr, sc.n_samples, seed, device)
    ref = np.concatenate([train, val])
    t0 = time.perf_counter()
    models = _train_models(bench, scale, constraint, specs, x_tr, x_va, val, ref, starts, seed, device, log)
    train_s = time.perf_counter() - t0

    rows = []
    specs_run = [(name, key, handling, "fp32") for name, key, handling in _sampler_specs(bench, constraint.n_ineq > 0)]
    if precision != "fp32":  # the same models' landing samplers with the network at ``precision``
        specs_run += [(f"{name} {precision}", key, "landing", precision) for name, key in (("OLLA", "od"), ("ULLA", "ud"))]
    for name, key, handling, prec in specs_run:
        row = _sampler_row(bench, constraint, models[key], name, handling, prec, starts(key, handling), sc.n_samples,
                           test, ref, seed, device)
        rows.append(row)
        if on_row:
            on_row(row)
        log(f"  {bench.name:12s} {name:12s} {bench.metric_name} {row['quality']:.4f}  viol {row['violation_max']:.1e}  "
            f"drop {row['drop_rate']:.3f}  {row['wall_s']:.3f}s")
    by = {r["sampler"]: r for r in rows}
    t0 = time.perf_counter()
    diag = _prior_diagnostics(bench, constraint, models, x_va, test, ref, sc.n_samples, seed, device,
                              {"olla": by["OLLA"]["quality"], "ulla": by["ULLA"]["quality"]})
    _log_diagnostics(log, bench.name, diag, time.perf_counter() - t0)
    floor = bench.quality(train[: len(test) * 4], test, ref) if len(train) > 1 else float("nan")
    return {"benchmark": bench.name, "rows": rows, "ratios": _ratios(by, precision, floor, data_violation, train_s, diag)}


def _safe_ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(b) and b != 0 else float("nan")


COLUMNS = ["benchmark", "sampler", "dynamics", "device", "precision", "n_samples", "jsd", "mmd", "violation_max",
           "drop_rate", "nfe", "newton_iters", "wall_s", "peak_mem_mb"]


def format_report(report: dict) -> str:
    fmt = {"jsd": "{:.3f}", "mmd": "{:.4f}", "violation_max": "{:.1e}", "drop_rate": "{:.3f}", "newton_iters": "{:.1f}",
           "wall_s": "{:.3f}", "peak_mem_mb": "{:.0f}"}
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in report["rows"]:
        lines.append("| " + " | ".join(fmt.get(c, "{}").format(r.get(c, "-")) for c in COLUMNS) + " |")
    lines.append("")
    lines.append("| benchmark | landing/unconstrained wall | projection/landing wall (OD) | (UD) | landing/projection quality "
                 "| ULLA NFE/OLLA NFE | ULLA - OLLA quality | floor (train vs test) |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for name, q in report["ratios"].items():
        lines.append(f"| {name} | {q['landing_over_unconstrained_wall']:.2f} | {q['projection_over_landing_wall']:.2f} | "
                     f"{q['ulla_projection_over_landing_wall']:.2f} | {q['landing_quality_over_projection']:.2f} | "
                     f"{q['ulla_nfe_over_olla']:.2f} | {q['ulla_quality_minus_olla']:+.3f} | {q['quality_floor_train_vs_test']:.3f} |")
    lines.append("")
    lines.append("| benchmark | forward end vs prior (OD) | (UD) | prior vs prior | MMD² forward end vs prior (OD) | (UD) "
                 "| prior vs prior | ULLA - OLLA, 3 seeds, from the prior | from the forward end |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for name, q in report["ratios"].items():
        if "prior_vs_prior" in q:
            lines.append(f"| {name} | {q['olla_forward_end_vs_prior']:.3f} | {q['ulla_forward_end_vs_prior']:.3f} | "
                         f"{q['prior_vs_prior']:.3f} | {q.get('olla_forward_end_vs_prior_mmd', float('nan')):.4f} | "
                         f"{q.get('ulla_forward_end_vs_prior_mmd', float('nan')):.4f} | "
                         f"{q.get('prior_vs_prior_mmd', float('nan')):.4f} | {q['ulla_minus_olla_from_prior_mean']:+.3f} | "
                         f"{q['ulla_minus_olla_from_forward_end_mean']:+.3f} |")
    for name, q in report["ratios"].items():
        for key in sorted(k for k in q if "_minus_fp32" in k):  # --precision: the same models, network at bf16/tf32
            wall = key.replace("_quality_", "_wall_").replace("_minus_", "_over_")
            lines.append(f"\n{name}: {key} {q[key]:+.4f}, {wall} {q[wall]:.2f}")
    for name, why in report["skipped"].items():
        lines.append(f"\nskipped {name}: {why}")
    for name, why in report.get("failed", {}).items():
        lines.append(f"\nFAILED {name}: {why}")
    return "\n".join(lines)
