"""The ``cdcore`` command: the whole pipeline (``cdcore run``) or one stage at a time.

Every stage subcommand is what ``dvc.yaml`` calls, so ``dvc repro`` and
``cdcore run`` share one code path.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

import typer

import flows  # noqa: F401  (sets offline-safe environment defaults before prefect/mlflow import)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help=(
        "Constrained diffusion, orchestrated.\n\n"
        "Start with `cdcore run`: it generates the data, trains a landing-diffusion model per data set, "
        "samples with landing and with the Newton-projection baseline, evaluates, registers the models in "
        "MLflow and writes reports/summary.json. Each stage also runs alone (`cdcore data`, `train`, `sample`, "
        "`evaluate`, `register`, `report`), which is what `dvc repro` calls."
    ),
)

ParamsOpt = typer.Option("params.yaml", "--params", "-p", help="the parameter file (validated before any work starts)")
DatasetOpt = typer.Option(None, "--dataset", "-d", help="data set name from params.yaml; repeat for several; default: all")
RootOpt = typer.Option(".", "--root", help="project folder where data/, models/, samples/, reports/ are written")


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _guarded(fn: Callable[[], object]) -> object:
    from cdcore.checkpoint import CheckpointError
    from cdcore.config import ConfigError
    from cdcore.data.io import DataError
    from cdcore.methods.landing import DivergenceError

    try:
        return fn()
    except (ConfigError, DataError, DivergenceError, CheckpointError) as e:
        _fail(str(e))
    except KeyError as e:
        _fail(str(e.args[0]) if e.args else repr(e))


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)


def _names(params, datasets: Optional[List[str]]) -> list[str]:
    names = datasets or list(params.datasets)
    for n in names:
        params.dataset(n)
    return names


def _each(stage: str, params_path: str, datasets: Optional[List[str]], root: str) -> None:
    from cdcore.config import load_params
    from flows import stages

    _setup_logging()

    def go() -> None:
        params = load_params(Path(root) / params_path)
        fn = {"data": stages.run_data, "mirror": stages.run_mirror, "train": stages.run_train,
              "sample": stages.run_sample, "evaluate": stages.run_evaluate, "register": stages.run_register}[stage]
        for name in _names(params, datasets):
            if stage == "train":
                fn(params, name, Path(root), on_progress=lambda s, r, n=name: typer.echo(
                    f"  train[{n}] step {s}: loss {r['loss']:.3f}" + (f", val {r['val_loss']:.3f}" if "val_loss" in r else "")
                    + f" ({r['elapsed_s']:.0f}s)", err=True))
            else:
                fn(params, name, Path(root))

    _guarded(go)


@app.command()
def run(params: str = ParamsOpt, dataset: Optional[List[str]] = DatasetOpt, root: str = RootOpt) -> None:
    """Run the whole pipeline as a Prefect flow and print the results table."""
    from flows.pipeline import pipeline
    from flows.stages import format_table

    t0 = time.perf_counter()

    def go() -> dict:
        from contextlib import ExitStack

        from cdcore.config import load_params
        from flows.lock import dataset_lock

        # take the data sets' locks (flows/lock.py) before Prefect starts, so a busy folder fails at once and
        # cleanly; the flow takes them again, re-entrant in this process
        names = _names(load_params(Path(root) / params), dataset)
        with ExitStack() as locks:
            for n in sorted(set(names)):
                locks.enter_context(dataset_lock(root, n))
            return pipeline(params_path=params, root=root, datasets=dataset)

    summary = _guarded(go)
    typer.echo("\n" + format_table(summary["rows"]))
    typer.echo(f"\nwrote {Path(root) / 'reports' / 'summary.json'} and reports/datasets/*_map.png "
               f"in {time.perf_counter() - t0:.0f}s; registered: {summary.get('registered_versions')}")


@app.command()
def data(params: str = ParamsOpt, dataset: Optional[List[str]] = DatasetOpt, root: str = RootOpt) -> None:
    """Read or generate each data set, check its constraint, split 80/10/10, write data/<name>.h5."""
    _each("data", params, dataset, root)


@app.command()
def mirror(params: str = ParamsOpt, dataset: Optional[List[str]] = DatasetOpt, root: str = RootOpt) -> None:
    """Fit the NAMM mirror maps g, f (method namm) -> mirrors/<name>/; other methods record that they need none."""
    _each("mirror", params, dataset, root)


@app.command()
def train(params: str = ParamsOpt, dataset: Optional[List[str]] = DatasetOpt, root: str = RootOpt) -> None:
    """Train each data set's model with its method (resumes from its checkpoint after a crash) -> models/<name>/."""
    _each("train", params, dataset, root)


@app.command()
def sample(params: str = ParamsOpt, dataset: Optional[List[str]] = DatasetOpt, root: str = RootOpt) -> None:
    """Sample each model (landing: also the Newton-projection baseline) -> samples/<name>.h5."""
    _each("sample", params, dataset, root)


@app.command()
def evaluate(params: str = ParamsOpt, dataset: Optional[List[str]] = DatasetOpt, root: str = RootOpt) -> None:
    """Score samples against the test split -> reports/datasets/<name>.json and a map PNG."""
    _each("evaluate", params, dataset, root)


@app.command()
def register(params: str = ParamsOpt, dataset: Optional[List[str]] = DatasetOpt, root: str = RootOpt) -> None:
    """Register each trained sampler in MLflow and point the alias (default `candidate`) at it."""
    _each("register", params, dataset, root)


@app.command()
def report(params: str = ParamsOpt, dataset: Optional[List[str]] = DatasetOpt, root: str = RootOpt) -> None:
    """Collect every data set's scores into reports/summary.json and print the table."""
    from cdcore.config import load_params
    from flows.stages import format_table, run_report

    summary = _guarded(lambda: run_report(load_params(Path(root) / params), Path(root), dataset))
    typer.echo(format_table(summary["rows"]))


@app.command()
def finetune(params: str = ParamsOpt,
             name: Optional[List[str]] = typer.Option(None, "--name", help="experiment under `finetune:` (repeatable; default: all)"),
             root: str = RootOpt) -> None:
    """Fine-tune registered pretrained models on their new class, plainly and under the distillation constraint."""
    from flows.finetune import format_rows, run_finetune

    _setup_logging()

    def go() -> None:
        from cdcore.config import ConfigError, load_params

        p = load_params(Path(root) / params)
        for n in name or list(p.finetune):
            if n not in p.finetune:
                raise ConfigError(f"no fine-tuning experiment {n!r} in {params}; defined: {', '.join(p.finetune) or 'none'}")
            rep = run_finetune(p, n, Path(root))
            typer.echo(f"\n{n} (from {rep['source']}):\n{format_rows(rep['rows'])}\nchecks: {rep['checks']}")

    _guarded(go)


@app.command()
def check(params: str = ParamsOpt, root: str = RootOpt) -> None:
    """Validate params.yaml and print the data sets it defines."""
    from cdcore.config import load_params

    p = _guarded(lambda: load_params(Path(root) / params))
    typer.echo(f"{params}: valid; data sets: {', '.join(f'{n} ({p.method_for(n)})' for n in p.datasets)}"
               + (f"; fine-tuning: {', '.join(p.finetune)}" if p.finetune else ""))


BENCH_SUITES = ("landing", "dual", "namm", "cost")


@app.command()
def bench(
    method: str = typer.Argument("landing", help="which suite: landing (constrained samplers), cost (sampling "
                                 "cost at the released network sizes, untrained), dual (digits fairness: dual "
                                 "training vs baselines) or namm (NAMM vs vanilla diffusion)"),
    scale: str = typer.Option("ci", "--scale", help="ci: minutes on a CPU; paper: the released sizes (use a GPU); "
                              "dual also has tiny (seconds, for tests)"),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto"),
    only: Optional[List[str]] = typer.Option(None, "--only", help="landing: benchmark name; dual: variant name; "
                                             "repeat for several; default: all of the scale"),
    use_flow: bool = typer.Option(False, "--flow", help="landing only: run as a Prefect flow with one mapped task "
                                  "per benchmark"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="dual only: torch intra-op threads "
                                          "(default on a CPU: 1)"),
    experiment: str = typer.Option("all", "--experiment", help="dual: fairness | finetune | all; "
                                   "namm: prior (NAMM vs vanilla) | inverse (mirror DPS vs DPS) | all"),
    precision: str = typer.Option("fp32", "--precision", help="landing and cost: the network's precision, fp32, "
                                  "tf32 (CUDA) or bf16; the constraint algebra stays in the samples' dtype. landing "
                                  "adds OLLA / ULLA rows at it beside the fp32 ones"),
    n: Optional[int] = typer.Option(None, "--n", min=1, help="cost: samples per run (default: the paper's on CUDA, "
                                    "a hundredth of it on a CPU)"),
    root: str = RootOpt,
) -> None:
    """Benchmark every sampler against its baselines on the same work; writes reports/bench/<method>*.json."""
    experiments = {"dual": ("fairness", "finetune"), "namm": ("prior", "inverse")}
    if method in experiments and experiment != "all" and experiment not in experiments[method]:
        _fail(f"--experiment for {method} must be {', '.join(experiments[method])} or all, got {experiment!r}")
    if method == "namm":  # vanilla diffusion vs NAMM + mirror diffusion on the five constraint problems
        from flows.namm_bench import bench_namm, bench_namm_inverse

        if experiment in ("all", "prior"):
            bench_namm(scale, device, only, Path(root), fail=_fail)
        if experiment in ("all", "inverse"):
            bench_namm_inverse(scale, device, Path(root), fail=_fail)
        return
    if method not in BENCH_SUITES:
        _fail(f"unknown benchmark suite {method!r}; available: {', '.join(BENCH_SUITES)}")
    if method == "cost":
        _bench_cost(device, precision, only, n, root)
        return
    if method == "dual":
        if experiment in ("all", "fairness"):
            _bench_dual(scale, device, only, use_flow, threads, root)
        if experiment in ("all", "finetune"):
            _bench_finetune(scale, device, threads, root)
        return
    if scale not in ("ci", "paper"):
        _fail(f"--scale must be ci or paper, got {scale!r}")
    _check_precision(device, precision)
    from cdcore import benchmarks
    from flows.bench import bench_flow, format_report, run_all

    for name in only or []:
        if name not in benchmarks.BENCHMARKS:
            _fail(f"unknown benchmark {name!r}; available: {', '.join(benchmarks.BENCHMARKS)}")
    if use_flow:
        report = bench_flow(scale=scale, device=device, only=only, root=root, precision=precision)
    else:
        report = run_all(scale, device, only, Path(root), precision=precision)
    typer.echo("\n" + format_report(report))
    typer.echo(f"\nwrote {Path(root) / 'reports' / 'bench' / 'landing.json'}")
    if report.get("failed"):
        _fail(f"{len(report['failed'])} benchmark(s) failed: {', '.join(report['failed'])} (their errors are above "
              "and in the JSON's 'failed'; the other rows were written)")


def _check_precision(device: str, precision: str) -> None:
    if precision not in ("fp32", "tf32", "bf16"):
        _fail(f"--precision must be fp32, tf32 or bf16, got {precision!r}")
    from cdcore.profiling import resolve_device

    try:
        dev = resolve_device(device)
    except RuntimeError as e:
        _fail(str(e))
    if precision == "tf32" and dev.type != "cuda":
        _fail(f"--precision tf32 is a CUDA tensor-core mode; on {dev.type} use fp32 or bf16")


def _bench_cost(device: str, precision: str, only: Optional[List[str]], n: Optional[int], root: str) -> None:
    from cdcore import benchmarks
    from flows.bench import format_cost_report, run_cost_all

    _check_precision(device, precision)
    for name in only or []:
        if name not in benchmarks.BENCHMARKS:
            _fail(f"unknown benchmark {name!r}; available: {', '.join(benchmarks.BENCHMARKS)}")
    try:
        report = run_cost_all(device, precision, only, Path(root), n=n)
    except (ValueError, RuntimeError) as e:
        _fail(str(e))
    typer.echo("\n" + format_cost_report(report))
    typer.echo(f"\nwrote {Path(root) / 'reports' / 'bench' / 'cost.json'}")
    if report.get("failed"):
        _fail(f"{len(report['failed'])} benchmark(s) failed: {', '.join(report['failed'])}")


def _bench_finetune(scale: str, device: str, threads: Optional[int], root: str) -> None:
    from cdcore.config.dual import FT_SCALES
    from cdcore.benchmarks.dual_finetune import format_finetune_report
    from flows.bench import run_dual_finetune

    if scale not in FT_SCALES:
        _fail(f"--scale must be one of {', '.join(FT_SCALES)} for the fine-tuning experiment, got {scale!r}")
    t0 = time.perf_counter()
    report = _guarded(lambda: run_dual_finetune(scale, device, Path(root), threads=threads))
    out = Path(root) / "reports" / "bench"
    typer.echo("\n" + format_finetune_report(report))
    typer.echo(f"\nwrote {out / 'dual_finetune.json'} and {out / 'dual_finetune.png'} in {time.perf_counter() - t0:.0f}s")


def _bench_dual(scale: str, device: str, only: Optional[List[str]], use_flow: bool, threads: Optional[int],
                root: str) -> None:
    from cdcore.benchmarks.dual import format_dual_report
    from cdcore.config.dual import SCALES, VARIANTS

    if scale not in SCALES:
        _fail(f"--scale must be one of {', '.join(SCALES)} for dual, got {scale!r}")
    if use_flow:
        _fail("--flow is only available for the landing suite")
    for name in only or []:
        if name not in VARIANTS:
            _fail(f"unknown dual variant {name!r}; available: {', '.join(VARIANTS)}")
    from cdcore.profiling import resolve_device
    from flows.bench import run_dual

    try:
        resolve_device(device)
    except RuntimeError as e:   # --device cuda without a GPU
        _fail(str(e))
    t0 = time.perf_counter()
    report = _guarded(lambda: run_dual(scale, device, Path(root), variants=only or None, threads=threads))
    out = Path(root) / "reports" / "bench"
    typer.echo("\n" + format_dual_report(report))
    typer.echo(f"\nwrote {out / 'dual.json'} and {out / 'dual_shares.png'} in {time.perf_counter() - t0:.0f}s")


@app.command()
def promote(
    dataset: str = typer.Option(..., "--dataset", "-d", help="data set whose registered sampler to promote"),
    version: Optional[str] = typer.Option(None, "--version", help="model version; default: the one at --from-alias"),
    from_alias: str = typer.Option("candidate", "--from-alias"),
    alias: str = typer.Option("champion", "--alias"),
    metric: str = typer.Option("landing.jsd", "--metric", help="primary metric, lower is better"),
    constraint_metric: str = typer.Option("landing.violation_max", "--constraint-metric"),
    tol: Optional[float] = typer.Option(None, "--tol", help="constraint tolerance; default evaluate.feasibility_tol"),
    params: str = ParamsOpt,
    root: str = RootOpt,
) -> None:
    """Move the alias `champion` to the candidate only if it is feasible and beats the current champion."""
    from flows.promote import promote_dataset

    d = _guarded(lambda: promote_dataset(dataset, params_path=params, root=root, version=version, from_alias=from_alias,
                                         alias=alias, metric=metric, constraint_metric=constraint_metric, tol=tol))
    typer.echo(f"{d.model} v{d.candidate}: {d.outcome.upper()}: {d.reason}")


@app.command()
def sweep(
    params: str = ParamsOpt,
    root: str = RootOpt,
    address: Optional[str] = typer.Option(None, "--address", help="existing Dask scheduler (default: a local cluster)"),
) -> None:
    """Run the grid methods x data sets x seeds of the `sweep:` section on Dask, one MLflow run per point."""
    from flows.sweep import sweep as sweep_flow

    result = _guarded(lambda: sweep_flow(params_path=params, root=root, address=address))
    typer.echo(f"sweep finished: {len(result.get('points', []))} points")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
