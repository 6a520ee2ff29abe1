"""A sweep over methods × data sets × seeds on a Dask cluster, one folder and one MLflow run per point.

Each point runs the pipeline's stages in ``<root>/sweeps/<sweep_id>/<dataset>-<method>-s<seed>/`` (points never
share a file), under its own run below one sweep parent whose id is passed explicitly: points run in other
processes or hosts. Without a ``sweep:`` section it covers every data set, the configured method and seeds [0, 1].

Where points run: a local cluster of ``workers`` one-thread processes (argument, ``CDCORE_DASK_WORKERS`` or
``sweep.workers``) reporting to this process's Prefect API; ``address=`` or ``CDCORE_DASK_ADDRESS`` for an existing
cluster (cdcore installed, a shared filesystem, real ``PREFECT_API_URL`` / ``MLFLOW_TRACKING_URI``);
``CDCORE_DASK_CLUSTER_CLASS`` for another cluster class. GPU points ask Dask for ``resources={"GPU": 1}``
(``sweep.gpu_resource``), so workers that declare it (``--resources GPU=1``) run one per GPU.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

import yaml
from prefect import flow, get_run_logger, task
from prefect.futures import wait
from pydantic import ValidationError

from cdcore.config import ConfigError, FileDataset, Params, SweepCfg, load_params, parse_params
from cdcore.report.sweep import seed_spread
from flows import stages, tracking
from flows.layout import Layout

ADDRESS_ENV = "CDCORE_DASK_ADDRESS"
WORKERS_ENV = "CDCORE_DASK_WORKERS"
CLUSTER_CLASS_ENV = "CDCORE_DASK_CLUSTER_CLASS"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")



def load_sweep(params_path: str | Path = "params.yaml", overrides: Optional[dict] = None) -> tuple[Params, SweepCfg]:
    """Read params.yaml; return its validated parameters (without ``sweep``) and the sweep settings.

    ``overrides`` (e.g. from a deployment's parameters) replace keys of the ``sweep:`` mapping.
    """
    path = Path(params_path)
    full = load_params(path)  # the sweep section is a field of Params: validated with the rest of the file
    params = full.model_copy(update={"sweep": SweepCfg()})
    try:
        cfg = SweepCfg.model_validate({**full.sweep.model_dump(),
                                       **{k: v for k, v in (overrides or {}).items() if v is not None}})
    except ValidationError as e:
        lines = [f"  - sweep.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        raise ConfigError(f"{path}: sweep overrides are invalid:\n" + "\n".join(lines)) from None
    for name in cfg.datasets:
        params.dataset(name)  # raises ConfigError naming the data sets defined
    if not cfg.methods:
        cfg = cfg.model_copy(update={"methods": [params.method]})
    if not cfg.datasets:
        cfg = cfg.model_copy(update={"datasets": list(params.datasets)})
    for m in cfg.methods:  # validate each method against the params schema before any work starts
        parse_params({**params.model_dump(mode="json"), "method": m}, source=f"{path} (sweep.methods: {m})")
    return params, cfg


def point_name(dataset: str, method: str, seed: int) -> str:
    return f"{dataset}-{method}-s{seed}"


def point_params(params: Params, root: Path, method: str, dataset: str, seed: int, register: bool) -> dict:
    """The parameters of one point: one data set, its seed and method; file paths made absolute."""
    raw = params.model_dump(mode="json")
    ds = dict(raw["datasets"][dataset])
    if isinstance(params.dataset(dataset), FileDataset):   # checked against the sweep's project folder, then
        from flows.stages.landing import data_path      # absolute, for the point's folder of its own

        ds.update(path=str(data_path(params.dataset(dataset), dataset, root).resolve()), outside_project=True)
    raw.update(seed=seed, method=method, datasets={dataset: ds})
    raw["tracking"] = {**raw["tracking"], "register_model": bool(register)}
    return raw


def needs_gpu(params: Params, cfg: SweepCfg) -> bool:
    if cfg.gpu != "auto":
        return cfg.gpu == "always"
    devices = {params.train.device, params.sample.device}
    if "cuda" in devices:
        return True
    if "auto" in devices:
        import torch

        return torch.cuda.is_available()
    return False


def _absolute_tracking_uri() -> str:
    """The tracking URI as workers in other folders must see it (a relative SQLite path made absolute)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlruns.db")
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str((Path.cwd() / uri[len(prefix):]).resolve())
    return uri


def _prefect_api_url() -> Optional[str]:
    """The Prefect API this process talks to, including the temporary server of an ephemeral run.

    Local Dask workers are new processes: without this they would each start (slowly) a temporary
    server of their own.
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url:
        return url
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the process's singleton; started by the running flow
    return server.api_url if server.running else None


def task_runner(address: Optional[str] = None, workers: int = 2, gpu_resource: Optional[str] = None):
    """The Dask task runner: an existing cluster (``address`` or CDCORE_DASK_ADDRESS), else a local one.

    A local cluster has ``workers`` processes with one thread each; when the points need a GPU each
    worker declares ``{gpu_resource: 1}`` (and there are at most as many workers as visible GPUs).
    """
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ConfigError("the sweep runs on Dask: pip install prefect-dask (the `dask` extra of cdcore)") from None

    address = address or os.environ.get(ADDRESS_ENV) or None
    if address:
        return DaskTaskRunner(address=address)
    kwargs: dict[str, Any] = {"n_workers": workers, "threads_per_worker": 1, "processes": True,
                              "dashboard_address": "127.0.0.1:0"}
    api = _prefect_api_url()
    if api:  # worker processes report their task runs to this process's Prefect API
        kwargs["env"] = {"PREFECT_API_URL": api}
    if gpu_resource:
        import torch

        if torch.cuda.is_available():
            kwargs["n_workers"] = max(1, min(workers, torch.cuda.device_count()))
        kwargs["resources"] = {gpu_resource: 1}
    return DaskTaskRunner(cluster_class=os.environ.get(CLUSTER_CLASS_ENV, "distributed.LocalCluster"),
                          cluster_kwargs=kwargs)


# ----- one point ------------------------------------------------------------------
def _dask_placement() -> dict:
    """Which Dask worker runs this point and the resources its task asked for (empty outside Dask)."""
    try:
        from distributed import get_worker

        worker = get_worker()
        ts = worker.state.tasks.get(worker.get_current_task())
        return {"worker": worker.address, "resources": dict(ts.resource_restrictions or {}) if ts else {}}
    except Exception:  # not on a Dask worker (e.g. called directly): nothing to report
        return {}


@task(name="sweep-point", task_run_name="{dataset}-{method}-s{seed}", retries=1, retry_delay_seconds=5)
def sweep_point(raw: dict, method: str, dataset: str, seed: int, point_root: str, ctx: dict) -> dict:
    """Run one point's stages in its own folder, under its own MLflow run below the sweep parent."""
    t0 = time.perf_counter()
    if ctx.get("threads_per_point"):
        import torch

        torch.set_num_threads(int(ctx["threads_per_point"]))
    params = parse_params(raw, source=f"sweep point {point_name(dataset, method, seed)}")
    root = Path(point_root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "point.json").write_text(json.dumps({"method": method, "dataset": dataset, "seed": seed, "params": raw},
                                                indent=1))
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))  # what this point ran with

    run_cm = nullcontext(None)
    if ctx.get("parent_run_id") and tracking.enabled():
        import mlflow

        mlflow.set_tracking_uri(ctx["tracking_uri"])
        os.environ["MLFLOW_TRACKING_URI"] = ctx["tracking_uri"]
        mlflow.set_experiment(experiment_id=ctx["experiment_id"])
        run_cm = mlflow.start_run(
            run_name=f"point:{point_name(dataset, method, seed)}", parent_run_id=ctx["parent_run_id"],
            tags={"cdcore.kind": "sweep-point", "cdcore.sweep_id": ctx["sweep_id"], "cdcore.method": method,
                  "cdcore.dataset": dataset, "cdcore.seed": str(seed), "cdcore.point_root": str(root)})
    with run_cm as run:
        run_id = run.info.run_id if run is not None else None
        if run is not None:
            tracking.log_params({"method": method, "dataset": dataset, "seed": seed, "point_root": str(root)})
        stages.run_data(params, dataset, root, run_id)
        stages.run_train(params, dataset, root, run_id)
        stages.run_sample(params, dataset, root, run_id)
        rows = stages.run_evaluate(params, dataset, root, run_id)
        version = stages.run_register(params, dataset, root, run_id) if params.tracking.register_model else None
        stages.run_report(params, root, [dataset])
        if run is not None:
            tracking.log_metrics({f"{r['sampler']}.{k}": v for r in rows for k, v in r.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)})
            tracking.log_metrics({"point_wall_s": time.perf_counter() - t0})
    return {"method": method, "dataset": dataset, "seed": seed, "root": str(root), "run_id": run_id,
            "registered_version": version, "wall_s": time.perf_counter() - t0, "pid": os.getpid(),
            "dask": _dask_placement(), "rows": rows}


# ----- the flows ----------------------------------------------------------------------
@flow(name="cdcore-sweep-points", log_prints=True)
def sweep_points(jobs: list[dict], ctx: dict, gpu_resource: Optional[str] = None) -> dict:
    """Submit every point to the task runner (Dask, set by :func:`sweep`) and collect them; never raises."""
    import dask

    annotate = dask.annotate(resources={gpu_resource: 1}) if gpu_resource else nullcontext()
    with annotate:
        futures = [sweep_point.submit(j["raw"], j["method"], j["dataset"], j["seed"], j["root"], ctx) for j in jobs]
    wait(futures)
    points, failed = [], []
    for j, f in zip(jobs, futures):
        if f.state.is_completed():
            points.append(f.result())
        else:
            failed.append({"point": point_name(j["dataset"], j["method"], j["seed"]), "state": f.state.name,
                           "message": f.state.message})
    return {"points": points, "failed": failed}


@flow(name="cdcore-sweep", log_prints=True)
def sweep(params_path: str = "params.yaml", root: str = ".", sweep_id: Optional[str] = None,
          methods: Optional[list[str]] = None, datasets: Optional[list[str]] = None,
          seeds: Optional[list[int]] = None, address: Optional[str] = None,
          workers: Optional[int] = None) -> dict:
    """Run every (method, data set, seed) point on a Dask cluster and write the sweep summary.

    The list arguments override the ``sweep:`` section of params.yaml; ``address`` (or
    CDCORE_DASK_ADDRESS) names an existing Dask scheduler, else a local cluster of ``workers``
    processes starts. A given ``sweep_id`` reuses that sweep's folders: a re-run redoes only what changed.
    """
    logger = get_run_logger()
    path = Path(params_path) if Path(params_path).is_absolute() else Path(root) / params_path
    params, cfg = load_sweep(path, {"methods": methods, "datasets": datasets, "seeds": seeds})
    sweep_id = sweep_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if not _ID_RE.match(sweep_id):
        raise ConfigError(f"sweep_id {sweep_id!r} must match {_ID_RE.pattern}")
    sweep_root = Layout(Path(root)).sweep(sweep_id).resolve()
    gpu = needs_gpu(params, cfg)
    workers = workers or int(os.environ.get(WORKERS_ENV, "0")) or cfg.workers
    runner = task_runner(address, workers, cfg.gpu_resource if gpu else None)
    if (address or os.environ.get(ADDRESS_ENV)) and not os.environ.get("PREFECT_API_URL"):
        logger.warning("remote Dask cluster but no PREFECT_API_URL: the workers cannot reach this process's "
                       "temporary Prefect server, so their task runs will not show here; set PREFECT_API_URL")
    grid = [(m, d, s) for m in cfg.methods for d in cfg.datasets for s in cfg.seeds]
    where = address or os.environ.get(ADDRESS_ENV) or f"local Dask cluster ({runner.cluster_kwargs.get('n_workers')} workers)"
    logger.info("sweep %s: %d points (%s x %s x seeds %s) on %s, outputs in %s%s", sweep_id, len(grid), cfg.methods,
                cfg.datasets, cfg.seeds, where, sweep_root, f"; each asks Dask for {cfg.gpu_resource}=1" if gpu else "")

    tags = {"cdcore.kind": "sweep", "cdcore.sweep_id": sweep_id, "cdcore.points": str(len(grid))}
    with tracking.pipeline_run(params.tracking.experiment, name=f"sweep:{sweep_id}", tags=tags) as parent:
        ctx: dict[str, Any] = {"sweep_id": sweep_id, "parent_run_id": parent, "threads_per_point": cfg.threads_per_point}
        if parent:
            import mlflow

            ctx["tracking_uri"] = _absolute_tracking_uri()
            ctx["experiment_id"] = mlflow.get_run(parent).info.experiment_id
            tracking.log_params({"sweep.methods": ",".join(cfg.methods), "sweep.datasets": ",".join(cfg.datasets),
                                 "sweep.seeds": ",".join(map(str, cfg.seeds)), "sweep.gpu": gpu,
                                 "sweep.dask": where})
        jobs = [{"raw": point_params(params, Path(root), m, d, s, cfg.register_models), "method": m, "dataset": d, "seed": s,
                 "root": str(sweep_root / point_name(d, m, s))} for m, d, s in grid]
        result = sweep_points.with_options(task_runner=runner)(jobs, ctx, cfg.gpu_resource if gpu else None)
        points, failed = result["points"], result["failed"]
        summary = {"sweep_id": sweep_id, "root": str(sweep_root), "parent_run_id": parent,
                   "config": cfg.model_dump(mode="json"), "gpu": gpu, "dask": where, "points": points,
                   "failed": failed, "aggregate": seed_spread(points)}
        sweep_root.mkdir(parents=True, exist_ok=True)
        out = sweep_root / "summary.json"
        out.write_text(json.dumps(summary, indent=1, default=str))
        if parent:
            for row in summary["aggregate"]:
                key = f"{row['method']}.{row['dataset']}.{row['sampler']}"
                tracking.log_metrics({f"{key}.jsd_mean": row["jsd_mean"], f"{key}.jsd_std": row["jsd_std"]})
            tracking.log_artifact(out, "reports")
    for row in summary["aggregate"]:
        logger.info("%s/%s/%s: jsd %.3f +- %.3f over %d seeds", row["method"], row["dataset"], row["sampler"],
                    row["jsd_mean"], row["jsd_std"], row["n_seeds"])
    if failed:
        raise RuntimeError(f"sweep {sweep_id}: {len(failed)} of {len(grid)} points failed: "
                           + "; ".join(f"{x['point']} ({x['state']}: {x['message']})" for x in failed)
                           + f". The others finished; summary in {out}")
    return json.loads(json.dumps(summary, default=str))
