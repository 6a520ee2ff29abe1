"""`cdcore bench landing`: every benchmark × sampler in one process, ratios, JSON, MLflow rows.

The same work is also a Prefect flow (`bench_flow`) that maps one task per benchmark.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Optional

import torch
from prefect import flow, task

from cdcore import benchmarks
from cdcore.benchmarks.landing import run_benchmark
from cdcore.data.io import write_text_atomic
from cdcore.profiling import resolve_device
from cdcore.report import landing_bench_overview
from flows import tracking
from cdcore.report.tables import json_default

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["benchmark", "sampler", "dynamics", "device", "precision", "n_samples", "jsd", "mmd", "violation_max",
           "drop_rate", "nfe", "newton_iters", "wall_s", "peak_mem_mb"]


def default_paths(root: Path) -> benchmarks.Paths:
    shared = os.environ.get("CDCORE_SHARED")
    shared_path = Path(shared) if shared else (REPO.parent / "shared")
    return benchmarks.Paths(assets=root / "assets", shared=shared_path if shared_path.is_dir() else None)


def _log_rows(result: dict, parent_run_id: Optional[str]) -> None:
    metrics = {f"{r['sampler']}.{k}": v for r in result["rows"] for k, v in r.items()}
    metrics.update({f"ratio.{k}": v for k, v in result["ratios"].items() if isinstance(v, (int, float))})
    tracking.log_bench_run("bench", result["benchmark"], metrics, parent_run_id)


def run_all(scale: str, device: str, only: Optional[list[str]], root: Path, seed: int = 0,
            parent_run_id: Optional[str] = None, precision: str = "fp32") -> dict:
    dev = resolve_device(device)
    names = only or list(benchmarks.BENCHMARKS)
    paths = default_paths(root)
    results = []
    report: dict = {}
    for name in names:
        bench = benchmarks.get(name)
        print(f"[bench] {name} ({scale}, {dev})", flush=True)
        try:
            res = run_benchmark(bench, scale, dev, paths, seed=seed, precision=precision)
        except Exception as e:  # one broken benchmark must not cost the others' results
            res = {"benchmark": name, "error": f"{type(e).__name__}: {e}", "rows": [], "ratios": {}}
            print(f"  FAILED: {res['error']}", flush=True)
        if res.get("skipped"):
            print(f"  skipped: {res['skipped']}", flush=True)
        results.append(res)
        if not res.get("error"):
            _log_rows(res, parent_run_id)
        report = finish(results, scale, dev, root)   # rewritten after each benchmark: a crash keeps the rows so far
    return report


def finish(results: list[dict], scale: str, dev: torch.device, root: Path) -> dict:
    report = {
        "scale": scale, "device": str(dev), "torch": torch.__version__, "host": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "rows": [r for res in results for r in res["rows"]],
        "ratios": {res["benchmark"]: res["ratios"] for res in results if res["ratios"]},
        "skipped": {res["benchmark"]: res["skipped"] for res in results if res.get("skipped")},
        "failed": {res["benchmark"]: res["error"] for res in results if res.get("error")},
    }
    out = root / "reports" / "bench" / "landing.json"
    write_text_atomic(out, json.dumps(report, indent=1, default=json_default))
    if report["rows"]:
        landing_bench_overview(out.with_suffix(".png"), report["rows"], report["ratios"])
    return report


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


@task(name="bench-benchmark")
def bench_task(name: str, scale: str, device: str, root: str, seed: int, parent_run_id: Optional[str],
               precision: str = "fp32") -> dict:
    res = run_benchmark(benchmarks.get(name), scale, resolve_device(device), default_paths(Path(root)), seed=seed,
                        precision=precision)
    _log_rows(res, parent_run_id)
    return res


@flow(name="cdcore-bench-landing")
def bench_flow(scale: str = "ci", device: str = "auto", only: Optional[list[str]] = None, root: str = ".",
               seed: int = 0, precision: str = "fp32") -> dict:
    """Fan out one mapped task per benchmark; each logs its rows to MLflow under one parent run."""
    names = only or list(benchmarks.BENCHMARKS)
    with tracking.pipeline_run("cdcore-bench", name=f"bench-landing-{scale}") as parent:
        futures = bench_task.map(names, scale, device, root, seed, parent, precision)
        results = [f.result() for f in futures]
    return finish(results, scale, resolve_device(device), Path(root))


# ----- `cdcore bench cost`: sampling cost at the released network sizes (cdcore/bench_cost.py) -----------
def run_cost_all(device: str, precision: str, only: Optional[list[str]], root: Path, n: Optional[int] = None,
                 runs: int = 3, seed: int = 0) -> dict:
    """Every benchmark's cost rows and ratios in one process; JSON and plot rewritten after each benchmark."""
    from cdcore.benchmarks.cost import cpu_batch, run_cost
    from cdcore.report import cost_overview

    dev = resolve_device(device)
    results: list[dict] = []
    report: dict = {}
    out = root / "reports" / "bench" / "cost.json"
    for name in only or list(benchmarks.BENCHMARKS):
        bench = benchmarks.get(name)
        size = n or (bench.scales["paper"].n_samples if dev.type == "cuda" else cpu_batch(bench))
        print(f"[bench cost] {name} ({dev}, {precision}, {size} samples, MLP {bench.scales['paper'].depth} x "
              f"{bench.scales['paper'].hidden})", flush=True)
        try:
            res = run_cost(bench, dev, size, precision, runs=runs, seed=seed)
        except Exception as e:  # one broken benchmark must not cost the others' results
            res = {"benchmark": name, "error": f"{type(e).__name__}: {e}", "rows": [], "ratios": {}}
            print(f"  FAILED: {res['error']}", flush=True)
        else:
            metrics = {f"{r['sampler']}.wall_s": r["wall_s"] for r in res["rows"]}
            metrics.update({f"ratio.{k}": float(v) for k, v in res["ratios"].items() if isinstance(v, (int, float))})
            tracking.log_bench_run("bench-cost", name, metrics)
        results.append(res)
        report = {"device": str(dev), "precision": precision, "runs": runs, "torch": torch.__version__,
                  "host": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                  "rows": [r for x in results for r in x["rows"]],
                  "ratios": {x["benchmark"]: x["ratios"] for x in results if x["ratios"]},
                  "failed": {x["benchmark"]: x["error"] for x in results if x.get("error")}}
        write_text_atomic(out, json.dumps(report, indent=1, default=json_default))
        if report["rows"]:
            cost_overview(out.with_suffix(".png"), report["rows"], report["ratios"])
    return report


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


# ----- `cdcore bench dual`: the digits fairness benchmark (cdcore/dual_bench.py) -------------------
def _log_dual_row(row: dict, parent_run_id: Optional[str]) -> None:
    metrics = dict(row)
    metrics.update({f"share_corrected.{c}": v for c, v in row["minority_share_corrected"].items()})
    metrics.update({f"share_raw.{c}": v for c, v in row["minority_share_raw"].items()})
    tracking.log_bench_run("bench", f"{row['benchmark']}:{row['model']}:seed{row['seed']}", metrics, parent_run_id)


def run_dual(scale: str, device: str, root: Path, variants: Optional[list[str]] = None,
             threads: Optional[int] = None, parent_run_id: Optional[str] = None) -> dict:
    """All variants × seeds of the digits fairness benchmark; one MLflow run per row unless CDCORE_TRACKING=off.

    On a CPU the run uses one intra-op thread unless ``threads`` says otherwise.
    """
    from cdcore.benchmarks.dual import run_dual_bench

    dev = resolve_device(device)
    if threads is None and dev.type == "cpu":
        threads = 1
    print(f"[bench] dual ({scale}, {dev})", flush=True)
    return run_dual_bench(scale, dev, root, variants=variants, threads=threads,
                          on_row=lambda r: _log_dual_row(r, parent_run_id), log=lambda s: print(s, flush=True))


def run_dual_finetune(scale: str, device: str, root: Path, threads: Optional[int] = None,
                      parent_run_id: Optional[str] = None) -> dict:
    """Fine-tuning without forgetting (pretrain without 9, fine-tune on 9s) × seeds; one MLflow run per row."""
    from cdcore.benchmarks.dual_finetune import run_finetune_bench

    dev = resolve_device(device)
    if threads is None and dev.type == "cpu":
        threads = 1
    print(f"[bench] dual fine-tuning ({scale}, {dev})", flush=True)
    report = run_finetune_bench(scale, dev, root, seeds=None, threads=threads, log=lambda s: print(s, flush=True))
    for row in report["rows"]:
        metrics = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        tracking.log_bench_run("bench", f"digits_finetune:{row['variant']}:seed{row['seed']}", metrics, parent_run_id)
    return report
