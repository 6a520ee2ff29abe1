"""MLflow glue: one parent run per pipeline run, a nested run per stage, the model registry.

The store defaults to ``sqlite:///mlruns.db`` in the project folder (``MLFLOW_TRACKING_URI`` overrides it);
``CDCORE_TRACKING=off`` runs the stages with no tracking at all.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

SAMPLERS = Path(__file__).with_name("samplers")


def sampler_code(method: str) -> Path:
    """The pyfunc code file of a method's registered sampler (models are logged as code, never pickled)."""
    return SAMPLERS / f"{method}.py"


def enabled() -> bool:
    return os.environ.get("CDCORE_TRACKING", "on").lower() not in ("off", "0", "false", "no")


def _mlflow():
    import mlflow

    return mlflow


def setup(experiment: str = "cdcore") -> None:
    """Select the store and experiment; a new experiment on a SQLite store keeps its artifacts beside the database.

    (MLflow's default artifact root is relative to the current folder, so runs started from
    elsewhere would scatter ``mlruns/`` folders.)
    """
    mlflow = _mlflow()
    uri = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlruns.db")
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///") and mlflow.get_experiment_by_name(experiment) is None:
        db = Path(uri[len("sqlite:///"):]).resolve()
        try:
            mlflow.create_experiment(experiment, artifact_location=(db.parent / "mlartifacts" / experiment).as_uri())
        except Exception:  # created concurrently by another process: fine
            pass
    mlflow.set_experiment(experiment)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _dvc_tags() -> dict[str, str]:
    """DVC exports these to each stage command: they tie an MLflow run to a DVC stage / experiment."""
    keys = ("DVC_STAGE", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV")
    return {k.lower(): os.environ[k] for k in keys if k in os.environ}


@contextmanager
def pipeline_run(experiment: str, name: str = "pipeline", tags: Optional[dict] = None) -> Iterator[Optional[str]]:
    """The parent run of one pipeline run; yields its id (None when tracking is off)."""
    if not enabled():
        yield None
        return
    mlflow = _mlflow()
    setup(experiment)
    with mlflow.start_run(run_name=name, tags={"cdcore.kind": "pipeline", **(tags or {})}) as run:
        yield run.info.run_id


@contextmanager
def stage_run(stage: str, dataset: str, parent_run_id: Optional[str] = None,
              experiment: Optional[str] = None) -> Iterator[Optional[Any]]:
    """A run for one stage of one data set, nested under the pipeline run when there is one."""
    if not enabled():
        yield None
        return
    mlflow = _mlflow()
    if parent_run_id is None:
        setup(experiment or os.environ.get("CDCORE_EXPERIMENT", "cdcore"))
    tags = {"cdcore.stage": stage, "cdcore.dataset": dataset, **_dvc_tags()}
    # the parent may be active in this thread (flow) or not (task threads, subprocesses): pass it explicitly
    active = mlflow.active_run()
    nested = active is not None
    with mlflow.start_run(run_name=f"{stage}:{dataset}", nested=nested, parent_run_id=parent_run_id, tags=tags) as run:
        try:
            yield run
        except BaseException as e:  # the run ends FAILED; say why where the user looks
            mlflow.set_tag("cdcore.error", f"{type(e).__name__}: {e}"[:5000])
            raise


def log_params(params: dict[str, Any]) -> None:
    _mlflow().log_params({k: v if isinstance(v, (int, float, bool)) else str(v)[:6000] for k, v in params.items()})


def metric_key(name: str) -> str:
    """MLflow refuses names with characters outside [A-Za-z0-9_-. :/] (a sampler named ``ambient+proj``)."""
    return re.sub(r"[^\w\-. :/]", "_", name)


def log_metrics(metrics: dict[str, Any], step: Optional[int] = None) -> None:
    clean = {metric_key(k): float(v) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)}
    _mlflow().log_metrics(clean, step=step)


def log_bench_run(stage: str, name: str, metrics: dict[str, Any], parent_run_id: Optional[str] = None) -> None:
    """One run in the ``cdcore-bench`` experiment holding a benchmark result's numbers (nothing when tracking is off)."""
    with stage_run(stage, name, parent_run_id, experiment="cdcore-bench") as run:
        if run is not None:
            log_metrics(metrics)


def log_artifact(path: str | Path, artifact_path: Optional[str] = None) -> None:
    _mlflow().log_artifact(str(path), artifact_path=artifact_path)
