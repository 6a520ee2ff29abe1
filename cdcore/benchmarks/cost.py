"""Sampling cost at the released network sizes, as ``performance.md`` measures it.

Per benchmark and dynamics, on one batch, N, network and precision: landing (OLLA / ULLA), Newton projection (OLLA-P
/ ULLA-P), the unconstrained loop (same network and noise, no constraint handling, no terminal projection) and the
floor (the network's N calls alone). Networks are untrained, at the paper scale's sizes: sampling cost does not
depend on the weights. Each time is the median of ``runs`` after a warm-up. Every sampler starts from the
constraint's analytic prior, drawn once outside the clock (the cost does not depend on where the chain starts). On
CUDA at the paper batch the official implementation's times (H100, fp32) stand beside ours.
"""

from __future__ import annotations

import statistics
from typing import Callable, Optional

import torch

from cdcore.benchmarks import Benchmark
from cdcore.config import ModelCfg
from cdcore.methods.landing import Precision, at_precision, build_model, sample_landing, schedule_from
from cdcore.profiling import measure

# performance.md: the official implementation on one H100, fp32, untrained networks of the released sizes,
# SO(10) at 10,000 samples and S² at 100,000; seconds. "floor": a loop whose only work is the network (N 100).
OFFICIAL_H100 = {
    "so10": {"overdamped": {"landing": 1.114, "projection": 2.787, "unconstrained": 0.270},
             "underdamped": {"landing": 0.573, "projection": 1.326, "unconstrained": 0.141},
             "floor": {"fp32": 0.241, "tf32": 0.055, "bf16": 0.038}, "n": 10_000},
    "sphere": {"overdamped": {"landing": 0.583, "projection": 0.719, "unconstrained": 0.564},
               "underdamped": {"landing": 0.321, "projection": 0.338, "unconstrained": 0.279},
               "floor": {"fp32": 0.525, "tf32": 0.161, "bf16": 0.098}, "n": 100_000},
}
# the targets for OLLA at N 100 on an H100 at the batch above (seconds)
TARGET_H100_S = {"so10": 0.11, "sphere": 0.12}
TARGET_LANDING_OVER_UNCONSTRAINED = 1.15

LogFn = Callable[[str], None]


def _median_time(fn: Callable[[], object], device: torch.device, runs: int) -> tuple[float, list[float], float, object]:
    fn()  # warm-up: allocator, kernels, autocast caches
    walls, peak, out = [], 0.0, None
    for _ in range(runs):
        with measure(device) as m:
            out = fn()
        walls.append(m.wall_s)
        peak = max(peak, m.peak_mem_mb)
    return statistics.median(walls), walls, peak, out


def _floor(model, constraint, schedule, n: int, device: torch.device, precision: Precision, underdamped: bool,
           seed: int) -> Callable[[], torch.Tensor]:
    """The network's N calls on fixed inputs: what any sampler with this network must at least spend."""
    gen = torch.Generator(device=device).manual_seed(seed)
    x = constraint.sample_prior(n, generator=gen, device=device).float()
    v = torch.randn(x.shape, generator=gen, device=device) if underdamped else None
    score = at_precision(model, precision, device)

    @torch.no_grad()
    def run() -> torch.Tensor:
        out = x
        for k in range(schedule.N, 0, -1):
            out = score(x, v, k)
        return out

    return run


def run_cost(bench: Benchmark, device: torch.device, n: int, precision: Precision = "fp32", runs: int = 3,
             model_cfg: Optional[ModelCfg] = None, seed: int = 0, log: LogFn = print) -> dict:
    """Rows {benchmark, sampler, dynamics, handling, device, precision, n, N, wall_s, walls, peak_mem_mb,
    drop_rate, violation_max, newton_iters} and the ratios of one run."""
    constraint = bench.make_constraint()
    mcfg = model_cfg or bench.model_cfg("paper")
    rows = []
    for dyn_name, sched_cfg, dyn_cfg in (("overdamped", bench.od_schedule, bench.od_dynamics),
                                         ("underdamped", bench.ud_schedule, bench.ud_dynamics)):
        schedule = schedule_from(sched_cfg)
        model = build_model(constraint.dim, schedule, dyn_cfg, mcfg, seed).to(device).eval()
        prefix = "OLLA" if dyn_name == "overdamped" else "ULLA"
        # drawn once, outside the clock: some priors are costly (the robot's generated paths)
        start = constraint.sample_prior(n, generator=torch.Generator(device=device).manual_seed(seed),
                                        device=device).float()
        for sampler, handling in ((prefix, "landing"), (f"{prefix}-P", "projection"),
                                  (f"unconstrained {dyn_name}", "none")):
            def draw(handling: str = handling):
                return sample_landing(model, constraint, schedule, dyn_cfg, n, handling=handling, seed=seed + 1,
                                      device=device, batch_size=n, terminal_projection=handling != "none",
                                      precision=precision, prior=lambda m, g: start[:m])

            wall, walls, peak, res = _median_time(draw, device, runs)
            x = res.x[~res.dropped].double()
            viol = float(constraint.violation(x).max()) if handling != "none" and len(x) else float("nan")
            rows.append({"benchmark": bench.name, "sampler": sampler, "dynamics": dyn_name, "handling": handling,
                         "device": str(device), "precision": precision, "n": n, "N": schedule.N, "wall_s": wall,
                         "walls": walls, "peak_mem_mb": peak, "drop_rate": float(res.dropped.float().mean()),
                         "violation_max": viol, "newton_iters": float(res.newton_iters.float().mean())})
            log(f"  {bench.name:18s} {sampler:24s} {wall:8.3f}s  drop {rows[-1]['drop_rate']:.3f}  "
                f"viol {viol:.1e}")
        wall, walls, peak, _ = _median_time(
            _floor(model, constraint, schedule, n, device, precision, dyn_name == "underdamped", seed), device, runs)
        rows.append({"benchmark": bench.name, "sampler": f"floor {dyn_name}", "dynamics": dyn_name,
                     "handling": "network only", "device": str(device), "precision": precision, "n": n,
                     "N": schedule.N, "wall_s": wall, "walls": walls, "peak_mem_mb": peak, "drop_rate": 0.0,
                     "violation_max": float("nan"), "newton_iters": 0.0})
        log(f"  {bench.name:18s} {'floor ' + dyn_name:24s} {wall:8.3f}s")
    return {"benchmark": bench.name, "constraint": bench.constraint, "rows": rows,
            "ratios": cost_ratios(rows, bench.constraint, device, n, precision)}


def cost_ratios(rows: list[dict], constraint: str, device: torch.device, n: int, precision: str) -> dict:
    """Ratios of one run's rows; against the official implementation only where the protocol matches it."""
    w = {r["sampler"]: r["wall_s"] for r in rows}
    out = {}
    for dyn, p in (("overdamped", "OLLA"), ("underdamped", "ULLA")):
        tag = "od" if dyn == "overdamped" else "ud"
        out[f"landing_over_unconstrained_{tag}"] = w[p] / w[f"unconstrained {dyn}"]
        out[f"projection_over_landing_{tag}"] = w[f"{p}-P"] / w[p]
        out[f"landing_over_floor_{tag}"] = w[p] / w[f"floor {dyn}"]
    out["landing_within_1.15_of_unconstrained"] = all(
        out[f"landing_over_unconstrained_{t}"] <= TARGET_LANDING_OVER_UNCONSTRAINED for t in ("od", "ud"))
    ref = OFFICIAL_H100.get(constraint)
    if ref is not None and torch.device(device).type == "cuda" and n == ref["n"]:
        out["official_landing_over_ours_od"] = ref["overdamped"]["landing"] / w["OLLA"]
        out["official_landing_over_ours_ud"] = ref["underdamped"]["landing"] / w["ULLA"]
        out["official_floor_s"] = ref["floor"].get(precision)
        out["target_olla_s"] = TARGET_H100_S[constraint]
        out["olla_meets_target_s"] = w["OLLA"] <= TARGET_H100_S[constraint]
    return out


def cpu_batch(bench: Benchmark) -> int:
    """A CPU batch that keeps the paper network's cost to seconds: 1 % of the paper's samples, at least 100."""
    return max(100, bench.scales["paper"].n_samples // 100)


def format_cost_report(report: dict) -> str:
    lines = ["| benchmark | n | OLLA s | unconstrained OD s | floor OD s | OLLA / unconstrained | OLLA-P / OLLA "
             "| ULLA s | ULLA / unconstrained | ULLA-P / ULLA | landing max violation |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, q in report["ratios"].items():
        w = {r["sampler"]: r for r in report["rows"] if r["benchmark"] == name}
        viol = max(w["OLLA"]["violation_max"], w["ULLA"]["violation_max"])
        lines.append(f"| {name} | {w['OLLA']['n']} | {w['OLLA']['wall_s']:.3f} | "
                     f"{w['unconstrained overdamped']['wall_s']:.3f} | {w['floor overdamped']['wall_s']:.3f} | "
                     f"{q['landing_over_unconstrained_od']:.2f} | {q['projection_over_landing_od']:.2f} | "
                     f"{w['ULLA']['wall_s']:.3f} | {q['landing_over_unconstrained_ud']:.2f} | "
                     f"{q['projection_over_landing_ud']:.2f} | {viol:.1e} |")
        if "official_landing_over_ours_od" in q:
            lines.append(f"|  | official H100 landing / ours: OD {q['official_landing_over_ours_od']:.1f}x, UD "
                         f"{q['official_landing_over_ours_ud']:.1f}x; OLLA target {q['target_olla_s']} s "
                         f"{'met' if q['olla_meets_target_s'] else 'missed'} |")
    for name, why in report.get("failed", {}).items():
        lines.append(f"\nFAILED {name}: {why}")
    return "\n".join(lines)
