"""``cdcore bench``: each suite of cdcore.benchmarks run in one process (landing also as a Prefect flow that maps a
task per benchmark), its report and figure written here where the layout says (cdcore writes none), and one MLflow
run per result in the ``cdcore-bench`` experiment (none when ``CDCORE_TRACKING=off``)."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from prefect import flow, task

from cdcore import benchmarks
from cdcore.benchmarks.dual import run_dual_bench
from cdcore.benchmarks.dual_finetune import run_finetune_bench
from cdcore.benchmarks.landing import run_benchmark
from cdcore.benchmarks.namm import run_suite
from cdcore.benchmarks.namm_dps import run_dps_suite
from cdcore.data.io import write_text_atomic
from cdcore.profiling import resolve_device
from cdcore.report import landing_bench_overview
from cdcore.report.dual import bench_finetune, bench_shares
from cdcore.report.inverse import plot_examples
from cdcore.report.namm import bench_histograms
from cdcore.report.tables import json_default
from flows import tracking
from flows.layout import Layout, default_paths


def _numbers(row: dict) -> dict:
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _log_rows(result: dict, parent_run_id: Optional[str]) -> None:
    metrics = {f"{r['sampler']}.{k}": v for r in result["rows"] for k, v in r.items()}
    metrics.update({f"ratio.{k}": v for k, v in result["ratios"].items() if isinstance(v, (int, float))})
    tracking.log_bench_run("bench", result["benchmark"], metrics, parent_run_id)


def _each_benchmark(only: Optional[list[str]], label: str, run: Callable[[str], dict],
                    write: Callable[[list[dict]], dict]) -> dict:
    """Run every benchmark; one that fails must not cost the others' rows. The report is rewritten after each."""
    results: list[dict] = []
    report: dict = {}
    for name in only or list(benchmarks.BENCHMARKS):
        print(f"[{label}] {name}", flush=True)
        try:
            res = run(name)
        except Exception as e:
            res = {"benchmark": name, "error": f"{type(e).__name__}: {e}", "rows": [], "ratios": {}}
            print(f"  FAILED: {res['error']}", flush=True)
        if res.get("skipped"):
            print(f"  skipped: {res['skipped']}", flush=True)
        results.append(res)
        report = write(results)
    return report


def _write(root: Path, name: str, report: dict, figure: Callable[[Path, Any], None], png: str = "") -> dict:
    """Write ``reports/bench/<name>`` atomically and, if it has rows, its figure ``figure(path, data)`` to ``png``
    (default: name.png); data is the report, or what the suite returned under "_figure" (not JSON; popped first)."""
    data = report.pop("_figure", report)
    out = Layout(root).bench(name)
    write_text_atomic(out, json.dumps(report, indent=1, default=json_default))
    if report["rows"]:
        figure(out.with_name(png) if png else out.with_suffix(".png"), data)
    return report


def _report(results: list[dict], root: Path, name: str, figure: Callable, **head) -> dict:
    report = {**head, "torch": torch.__version__, "host": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "rows": [r for res in results for r in res["rows"]],
              "ratios": {res["benchmark"]: res["ratios"] for res in results if res["ratios"]},
              "skipped": {res["benchmark"]: res["skipped"] for res in results if res.get("skipped")},
              "failed": {res["benchmark"]: res["error"] for res in results if res.get("error")}}
    return _write(root, name, report, lambda path, rep: figure(path, rep["rows"], rep["ratios"]))


def finish(results: list[dict], scale: str, dev: torch.device, root: Path) -> dict:
    return _report(results, root, "landing.json", landing_bench_overview, scale=scale, device=str(dev))


def run_all(scale: str, device: str, only: Optional[list[str]], root: Path, seed: int = 0,
            parent_run_id: Optional[str] = None, precision: str = "fp32") -> dict:
    """`cdcore bench landing`: every benchmark × sampler, ratios, JSON, MLflow rows."""
    dev, paths = resolve_device(device), default_paths(root)

    def run(name: str) -> dict:
        res = run_benchmark(benchmarks.get(name), scale, dev, paths, seed=seed, precision=precision)
        if not res.get("error"):
            _log_rows(res, parent_run_id)
        return res

    return _each_benchmark(only, f"bench {scale}, {dev}", run, lambda results: finish(results, scale, dev, root))


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
        results = [f.result() for f in bench_task.map(names, scale, device, root, seed, parent, precision)]
    return finish(results, scale, resolve_device(device), Path(root))


def run_cost_all(device: str, precision: str, only: Optional[list[str]], root: Path, n: Optional[int] = None,
                 runs: int = 3, seed: int = 0) -> dict:
    """`cdcore bench cost`: sampling cost at the released network sizes (untrained), per benchmark."""
    from cdcore.benchmarks.cost import cpu_batch, run_cost   # looked up here: tests patch the module
    from cdcore.report import cost_overview

    dev = resolve_device(device)

    def run(name: str) -> dict:
        bench = benchmarks.get(name)
        size = n or (bench.scales["paper"].n_samples if dev.type == "cuda" else cpu_batch(bench))
        res = run_cost(bench, dev, size, precision, runs=runs, seed=seed)
        metrics = {f"{r['sampler']}.wall_s": r["wall_s"] for r in res["rows"]}
        metrics.update({f"ratio.{k}": float(v) for k, v in res["ratios"].items() if isinstance(v, (int, float))})
        tracking.log_bench_run("bench-cost", name, metrics)
        return res

    return _each_benchmark(only, f"bench cost {dev}, {precision}", run, lambda results: _report(
        results, root, "cost.json", cost_overview, device=str(dev), precision=precision, runs=runs))


def _cpu_threads(dev: torch.device, threads: Optional[int]) -> Optional[int]:
    """One intra-op thread on a CPU unless told otherwise: the dual benches are many small runs."""
    return 1 if threads is None and dev.type == "cpu" else threads


def run_dual(scale: str, device: str, root: Path, variants: Optional[list[str]] = None,
             threads: Optional[int] = None, parent_run_id: Optional[str] = None) -> dict:
    """`cdcore bench dual`: all variants × seeds of the digits fairness benchmark, one MLflow run per row."""
    def log_row(row: dict) -> None:
        shares = {f"share_{k}.{c}": v for k in ("corrected", "raw") for c, v in row[f"minority_share_{k}"].items()}
        tracking.log_bench_run("bench", f"{row['benchmark']}:{row['model']}:seed{row['seed']}", {**row, **shares},
                               parent_run_id)

    dev = resolve_device(device)
    print(f"[bench] dual ({scale}, {dev})", flush=True)
    report = run_dual_bench(scale, dev, variants=variants, threads=_cpu_threads(dev, threads), on_row=log_row,
                            log=lambda s: print(s, flush=True))
    return _write(root, "dual.json", report, bench_shares, "dual_shares.png")


def run_dual_finetune(scale: str, device: str, root: Path, threads: Optional[int] = None,
                      parent_run_id: Optional[str] = None) -> dict:
    """Fine-tuning without forgetting (pretrain without 9, fine-tune on 9s) × seeds; one MLflow run per row."""
    dev = resolve_device(device)
    print(f"[bench] dual fine-tuning ({scale}, {dev})", flush=True)
    report = run_finetune_bench(scale, dev, seeds=None, threads=_cpu_threads(dev, threads),
                                log=lambda s: print(s, flush=True))
    _write(root, "dual_finetune.json", report, bench_finetune)
    for r in report["rows"]:
        tracking.log_bench_run("bench", f"digits_finetune:{r['variant']}:seed{r['seed']}", _numbers(r), parent_run_id)
    return report


def run_namm(scale: str, device: str, only: Optional[list[str]], root: Path, log: Callable[[str], None]) -> dict:
    """`cdcore bench namm --experiment prior`: NAMM against vanilla diffusion, one MLflow run per problem."""
    def log_result(res: dict) -> None:
        metrics = {f"{r['model']}.{k}": v for r in res["rows"] for k, v in r.items()}
        metrics.update({f"summary.{k}": v for k, v in res["summary"].items()})
        tracking.log_bench_run("bench-namm", res["problem"], metrics)

    return _write(root, "namm.json", run_suite(scale, device, only, log=log, on_result=log_result), bench_histograms,
                  "namm_constraint_hist.png")


def run_namm_inverse(scale: str, device: str, root: Path, log: Callable[[str], None]) -> dict:
    """Mirror DPS against DPS and constraint-guided DPS on the Burgers and Kolmogorov inverse problems."""
    report = _write(root, "namm_dps.json", run_dps_suite(scale, device, log=log), plot_examples)
    for r in report["rows"]:
        tracking.log_bench_run("bench-namm-dps", f"{r['problem']}:{r['sampler']}:seed{r['seed']}", _numbers(r))
    return report
