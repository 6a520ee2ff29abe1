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

import flows  # sets offline-safe environment defaults before prefect/mlflow import

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


def _guarded(fn: Callable[[], object], also: tuple = ()) -> object:
    """Run ``fn``; a failure the user must fix (flows/failures.py, or one of ``also``) is one line and exit 2."""
    from flows.failures import message

    try:
        return fn()
    except Exception as e:
        text = str(e) if isinstance(e, also) else message(e)
        if text is None:
            raise
        _fail(text)


class _OneLine(logging.Filter):
    """Prefect logs a failed task's or flow's traceback; for a failure the user must fix, the one line is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        from flows.failures import message

        if record.exc_info and record.exc_info[1] is not None and message(record.exc_info[1]) is not None:
            record.exc_info, record.exc_text = None, None
            record.msg, record.args = str(record.getMessage()).splitlines()[0], ()
        return True


def _on_sigterm() -> None:
    """SIGTERM ends the process as Ctrl-C does: open MLflow runs are closed (not left RUNNING) and locks released."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (e.g. called from a test's worker): leave the default
        pass


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)


def _names(params, datasets: Optional[List[str]]) -> list[str]:
    names = datasets or list(params.datasets)
    for n in names:
        params.dataset(n)
    return names


def _each(stage: str, params_path: str, datasets: Optional[List[str]], root: str) -> None:
    flows.use_root(root)
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
    flows.use_root(root)
    from flows.layout import Layout
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
    typer.echo(f"\nwrote {Layout(Path(root)).summary()} and reports/datasets/*_map.png "
               f"in {time.perf_counter() - t0:.0f}s; registered: {summary.get('registered_versions')}")


STAGE_COMMANDS = {  # what `dvc.yaml` calls, one stage for each data set (all, or those named)
    "data": "Read or generate each data set, check its constraint, split 80/10/10, write data/<name>.h5.",
    "mirror": "Fit the NAMM mirror maps g, f (method namm) -> mirrors/<name>/; other methods record that they need none.",
    "train": "Train each data set's model with its method (resumes from its checkpoint after a crash) -> models/<name>/.",
    "sample": "Sample each model (landing: also the Newton-projection baseline) -> samples/<name>.h5.",
    "evaluate": "Score samples against the test split -> reports/datasets/<name>.json and a map PNG.",
    "register": "Register each trained sampler in MLflow and point the alias (default `candidate`) at it.",
}


def _stage_command(stage: str, doc: str) -> None:
    def command(params: str = ParamsOpt, dataset: Optional[List[str]] = DatasetOpt, root: str = RootOpt) -> None:
        _each(stage, params, dataset, root)

    command.__doc__ = doc
    app.command(name=stage)(command)


for _stage, _doc in STAGE_COMMANDS.items():
    _stage_command(_stage, _doc)


@app.command()
def report(params: str = ParamsOpt, dataset: Optional[List[str]] = DatasetOpt, root: str = RootOpt) -> None:
    """Collect every data set's scores into reports/summary.json and print the table."""
    flows.use_root(root)
    from cdcore.config import load_params
    from flows.stages import format_table, run_report

    summary = _guarded(lambda: run_report(load_params(Path(root) / params), Path(root), dataset))
    typer.echo(format_table(summary["rows"]))


@app.command()
def finetune(params: str = ParamsOpt,
             name: Optional[List[str]] = typer.Option(None, "--name", help="experiment under `finetune:` (repeatable; default: all)"),
             root: str = RootOpt) -> None:
    """Fine-tune registered pretrained models on their new class, plainly and under the distillation constraint."""
    flows.use_root(root)
    from cdcore.report.summary import format_finetune_rows
    from flows.stages.finetune import run_finetune

    _setup_logging()

    def go() -> None:
        from cdcore.config import ConfigError, load_params

        p = load_params(Path(root) / params)
        for n in name or list(p.finetune):
            if n not in p.finetune:
                raise ConfigError(f"no fine-tuning experiment {n!r} in {params}; defined: {', '.join(p.finetune) or 'none'}")
            rep = run_finetune(p, n, Path(root))
            typer.echo(f"\n{n} (from {rep['source']}):\n{format_finetune_rows(rep['rows'])}\nchecks: {rep['checks']}")

    _guarded(go)


@app.command()
def check(params: str = ParamsOpt, root: str = RootOpt) -> None:
    """Validate params.yaml and print the data sets it defines."""
    from cdcore.config import load_params

    p = _guarded(lambda: load_params(Path(root) / params))
    typer.echo(f"{params}: valid; data sets: {', '.join(f'{n} ({p.method_for(n)})' for n in p.datasets)}"
               + (f"; fine-tuning: {', '.join(p.finetune)}" if p.finetune else ""))
    unnamed = [n for n, ds in p.datasets.items() if ds.method is None]
    if unnamed and (Path(root) / "dvc.yaml").is_file():
        typer.echo(f"note: `dvc repro` reads each data set's method from params.yaml: add `method: "
                   f"{p.method_for(unnamed[0])}` under datasets.{unnamed[0]}"
                   + (f" (and {', '.join(unnamed[1:])})" if unnamed[1:] else ""))


BENCH_SUITES = ("landing", "dual", "namm", "cost")
EXPERIMENTS = {"dual": ("fairness", "finetune"), "namm": ("prior", "inverse")}


def _suite_spec(method: str, experiment: str) -> tuple[tuple, list, str, str, Callable[[dict], str]]:
    """One suite's (scales, names ``--only`` may give, what a name is, the JSON it writes, its table)."""
    from cdcore import benchmarks

    landing_names = list(benchmarks.BENCHMARKS)
    if method == "landing":
        from cdcore.benchmarks.landing import format_report

        return ("ci", "paper"), landing_names, "benchmark", "landing.json", format_report
    if method == "cost":
        from cdcore.benchmarks.cost import format_cost_report

        return ("ci", "paper"), landing_names, "benchmark", "cost.json", format_cost_report
    if (method, experiment) == ("namm", "prior"):
        from cdcore.benchmarks.namm import format_report
        from cdcore.config.namm import PROBLEMS, SCALES

        return tuple(SCALES), list(PROBLEMS), "NAMM problem", "namm.json", format_report
    if method == "namm":
        from cdcore.config.namm import DPS_SCALES
        from cdcore.report.inverse import format_dps_report

        return tuple(DPS_SCALES), [], "", "namm_dps.json", format_dps_report
    if experiment == "fairness":
        from cdcore.benchmarks.dual import format_dual_report
        from cdcore.config.dual import SCALES, VARIANTS

        return tuple(SCALES), list(VARIANTS), "dual variant", "dual.json", format_dual_report
    from cdcore.benchmarks.dual_finetune import format_finetune_report
    from cdcore.config.dual import FT_SCALES

    return tuple(FT_SCALES), [], "", "dual_finetune.json", format_finetune_report


def _device(device: str, precision: str = "fp32") -> None:
    from cdcore.profiling import resolve_device

    if precision not in ("fp32", "tf32", "bf16"):
        _fail(f"--precision must be fp32, tf32 or bf16, got {precision!r}")
    if device not in ("auto", "cpu", "cuda"):
        _fail(f"--device must be cpu, cuda or auto, got {device!r}")
    try:
        dev = resolve_device(device)
    except RuntimeError as e:   # --device cuda without a GPU
        _fail(str(e))
    if precision == "tf32" and dev.type != "cuda":
        _fail(f"--precision tf32 is a CUDA tensor-core mode; on {dev.type} use fp32 or bf16")


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
    flows.use_root(root)
    from flows import bench as b
    from flows.layout import Layout

    if method not in BENCH_SUITES:
        _fail(f"unknown benchmark suite {method!r}; available: {', '.join(BENCH_SUITES)}")
    if method in EXPERIMENTS and experiment not in ("all", *EXPERIMENTS[method]):
        _fail(f"--experiment for {method} must be {', '.join(EXPERIMENTS[method])} or all, got {experiment!r}")
    if use_flow and method != "landing":
        _fail("--flow is only available for the landing suite")
    lay, log = Layout(Path(root)), (lambda line: typer.echo(line, err=True))
    runs = {("landing", "all"): lambda: (b.bench_flow(scale=scale, device=device, only=only, root=root,
                                                       precision=precision) if use_flow else
                                         b.run_all(scale, device, only, lay.root, precision=precision)),
            ("cost", "all"): lambda: b.run_cost_all(device, precision, only, lay.root, n=n),
            ("namm", "prior"): lambda: b.run_namm(scale, device, only, lay.root, log=log),
            ("namm", "inverse"): lambda: b.run_namm_inverse(scale, device, lay.root, log=log),
            ("dual", "fairness"): lambda: b.run_dual(scale, device, lay.root, variants=only or None, threads=threads),
            ("dual", "finetune"): lambda: b.run_dual_finetune(scale, device, lay.root, threads=threads)}
    chosen = [(m, e) for m, e in runs if m == method and experiment in ("all", e)]
    for m, e in chosen:   # every choice is checked before the first suite starts
        scales, names, what, _, _ = _suite_spec(m, e)
        if m != "cost" and scale not in scales:
            _fail(f"--scale must be one of {', '.join(scales)} for {m}, got {scale!r}")
        for name in (only or []) if what else []:
            if name not in names:
                _fail(f"unknown {what} {name!r}; available: {', '.join(names)}")
    _device(device, precision)
    for m, e in chosen:
        out, fmt = _suite_spec(m, e)[3:]
        t0 = time.perf_counter()
        report = _guarded(runs[(m, e)], also=(ValueError, RuntimeError) if m == "cost" else ())
        typer.echo("\n" + fmt(report) + f"\n\nwrote {lay.bench(out)} and its figure in {time.perf_counter() - t0:.0f}s")
        if report.get("failed") and m in ("landing", "cost"):
            _fail(f"{len(report['failed'])} benchmark(s) failed: {', '.join(report['failed'])} (their errors are "
                  "above and in the JSON's 'failed'; the other rows were written)")


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
    flows.use_root(root)
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
    flows.use_root(root)
    from flows.sweep import sweep as sweep_flow

    result = _guarded(lambda: sweep_flow(params_path=params, root=root, address=address))
    typer.echo(f"sweep finished: {len(result.get('points', []))} points")


def main() -> None:
    _on_sigterm()
    for name in ("prefect.task_runs", "prefect.flow_runs", "prefect.flow_engine", "prefect.task_engine"):
        logging.getLogger(name).addFilter(_OneLine())
    app()


if __name__ == "__main__":
    main()
