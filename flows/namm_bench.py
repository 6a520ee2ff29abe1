"""`cdcore bench namm`: the NAMM suite (cdcore/namm/bench.py) with one MLflow run per problem.

``CDCORE_TRACKING=off`` runs it with no MLflow at all (as the landing suite).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import typer

from flows import tracking


def log_result(res: dict, parent_run_id: Optional[str] = None) -> None:
    """One MLflow run per problem: every numeric row field as ``<model>.<key>``, the summary as ``summary.<key>``."""
    metrics = {f"{r['model']}.{k}": v for r in res["rows"] for k, v in r.items()}
    metrics.update({f"summary.{k}": v for k, v in res["summary"].items()})
    tracking.log_bench_run("bench-namm", res["problem"], metrics, parent_run_id)


def bench_namm(scale: str, device: str, only: Optional[list[str]], root: Path,
               fail: Callable[[str], None]) -> dict:
    from cdcore.benchmarks.namm import format_report, run_suite
    from cdcore.config.namm import PROBLEMS, SCALES

    if scale not in SCALES:
        fail(f"--scale must be one of {', '.join(SCALES)} for namm, got {scale!r}")
    for name in only or []:
        if name not in PROBLEMS:
            fail(f"unknown NAMM problem {name!r}; available: {', '.join(PROBLEMS)}")
    if device not in ("auto", "cpu", "cuda"):
        fail(f"--device must be cpu, cuda or auto, got {device!r}")
    from cdcore.profiling import resolve_device

    try:
        resolve_device(device)
    except RuntimeError as e:  # --device cuda without a GPU
        fail(str(e))
    t0 = time.perf_counter()
    report = run_suite(scale, device, only, root, log=lambda s: typer.echo(s, err=True), on_result=log_result)
    typer.echo("\n" + format_report(report))
    typer.echo(f"\nwrote {root / 'reports' / 'bench' / 'namm.json'} and namm_constraint_hist.png "
               f"in {time.perf_counter() - t0:.0f}s")
    return report


def bench_namm_inverse(scale: str, device: str, root: Path, fail: Callable[[str], None]) -> dict:
    """Mirror DPS against DPS and constraint-guided DPS on the Burgers and Kolmogorov inverse problems."""
    from cdcore.benchmarks.namm_dps import format_dps_report, run_dps_suite
    from cdcore.config.namm import DPS_SCALES

    if scale not in DPS_SCALES:
        fail(f"--scale must be one of {', '.join(DPS_SCALES)} for the inverse problems, got {scale!r}")
    t0 = time.perf_counter()
    report = run_dps_suite(scale, device, root, log=lambda s: typer.echo(s, err=True))
    for r in report["rows"]:
        metrics = {k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        tracking.log_bench_run("bench-namm-dps", f"{r['problem']}:{r['sampler']}:seed{r['seed']}", metrics)
    typer.echo("\n" + format_dps_report(report))
    typer.echo(f"\nwrote {root / 'reports' / 'bench' / 'namm_dps.json'} and namm_dps.png in {time.perf_counter() - t0:.0f}s")
    return report
