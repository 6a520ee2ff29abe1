"""The Prefect flow: data -> train -> sample -> evaluate -> register, per data set, then a summary.

Runs with no server (Prefect starts a temporary one) unless PREFECT_API_URL
points at one. Tasks retry transient errors only; a deterministic failure
(bad data, divergence, bad config) fails at once with its message.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Optional

from prefect import flow, get_run_logger, task
from prefect.context import TaskRunContext

from cdcore.config import Params, load_params, parse_params
from flows import stages, tracking
from flows.failures import deterministic
from flows.lock import dataset_lock
from cdcore.report.summary import format_finetune_rows
from flows.stages.finetune import run_finetune

def _retry_transient(task_, task_run, state) -> bool:
    """Retry only errors that may pass (I/O, a busy database), never a deterministic failure (flows/failures.py)."""
    try:
        state.result()
    except Exception as e:
        return not deterministic(e)
    return False


_OUTPUT = {"data": "data", "mirror": "mirror", "train": "model", "sample": "samples"}
_FINGERPRINT = {"data": stages.fp_data, "mirror": stages.fp_mirror, "train": stages.fp_train,
                "sample": stages.fp_sample}


def _cache_key(ctx: TaskRunContext, args: dict[str, Any]) -> Optional[str]:
    """Cache on the stage's inputs (params + upstream file hashes), and only while its output exists."""
    stage = ctx.task.name.split("-")[0]
    root, name = Path(args["root"]), args["name"]
    if not getattr(stages.Layout(root), _OUTPUT[stage])(name).exists():
        return None
    try:
        return f"{stage}-{name}-{_FINGERPRINT[stage](parse_params(args['params_raw']), name, root)}"
    except FileNotFoundError:
        return None


def _task(stage: str, run: Callable[..., Any]):
    """The Prefect task of one stage: the stage function on parsed params; the file stages cached on their inputs.

    ``upstream`` only orders the tasks (it is the previous stage's result)."""
    def body(params_raw: dict, name: str, root: str, parent_run_id: Optional[str], upstream: Any = None) -> Any:
        kwargs = {}
        if stage == "train":
            logger = get_run_logger()
            kwargs["on_progress"] = lambda step, row: logger.info(
                "train[%s] step %d: loss %.3f%s (%.0fs)", name, step, row["loss"],
                f", val {row['val_loss']:.3f}" if "val_loss" in row else "", row["elapsed_s"])
        out = run(parse_params(params_raw), name, Path(root), parent_run_id, **kwargs)
        return str(out) if isinstance(out, Path) else out

    body.__name__ = body.__qualname__ = f"{stage}_task"
    cached = {"cache_key_fn": _cache_key, "persist_result": True} if stage in _OUTPUT else {}
    return task(body, name=f"{stage}-stage", retries=2, retry_delay_seconds=2, retry_condition_fn=_retry_transient,
                **cached)


data_task, mirror_task, train_task, sample_task, evaluate_task, register_task = (
    _task(s, getattr(stages, f"run_{s}")) for s in ("data", "mirror", "train", "sample", "evaluate", "register"))
finetune_task = _task("finetune", run_finetune)


@flow(name="cdcore-pipeline", log_prints=True)
def pipeline(params_path: str = "params.yaml", root: str = ".", datasets: Optional[list[str]] = None) -> dict:
    """Run every stage for every data set in params.yaml (or the ones named) and write the summary."""
    logger = get_run_logger()
    params: Params = load_params(Path(root) / params_path if not Path(params_path).is_absolute() else params_path)
    raw = params.model_dump(mode="json")
    names = datasets or list(params.datasets)
    for n in names:
        params.dataset(n)
    with ExitStack() as locks:
        # one run per data set and folder for the whole chain and the summary (flows/lock.py); the stage
        # functions take the same lock again, which is re-entrant in this process. Sorted: no lock-order cycles.
        for n in sorted(set(names)):
            locks.enter_context(dataset_lock(root, n))
        with tracking.pipeline_run(params.tracking.experiment, tags={"cdcore.method": ",".join(sorted({params.method_for(n) for n in names}))}) as parent:
            versions = {}
            for n in names:
                d = data_task(raw, n, root, parent)
                # the mirror maps sit between data and training (method namm); for the other methods the stage
                # writes the record that none is needed, so the flow leaves the same outputs as `dvc repro`
                d = mirror_task(raw, n, root, parent, d)
                m = train_task(raw, n, root, parent, d)
                s = sample_task(raw, n, root, parent, m)
                e = evaluate_task(raw, n, root, parent, s)
                versions[n] = register_task(raw, n, root, parent, e)
            for ft_name, exp in params.finetune.items():     # fine-tuning starts from a model registered above
                if exp.base in names:
                    rep = finetune_task(raw, ft_name, root, parent)
                    versions[ft_name] = rep.get("registered_version")
            summary = stages.run_report(params, Path(root), names)
            if parent:
                tracking.log_artifact(stages.Layout(Path(root)).summary(), "reports")
    logger.info("results:\n%s", stages.format_table(summary["rows"]))
    summary["registered_versions"] = versions
    return json.loads(json.dumps(summary))


@flow(name="cdcore-finetune", log_prints=True)
def finetune_flow(params_path: str = "params.yaml", root: str = ".", names: Optional[list[str]] = None) -> dict:
    """Run the fine-tuning experiments of params.yaml (all, or those named) from their registered models."""
    logger = get_run_logger()
    params = load_params(Path(root) / params_path if not Path(params_path).is_absolute() else params_path)
    raw = params.model_dump(mode="json")
    names = names or list(params.finetune)
    for n in names:
        if n not in params.finetune:
            raise KeyError(f"no fine-tuning experiment {n!r} in params.yaml; defined: {', '.join(params.finetune)}")
    results = {}
    with tracking.pipeline_run(params.tracking.experiment, name="finetune", tags={"cdcore.method": "dual"}) as parent:
        for n in names:
            results[n] = finetune_task(raw, n, root, parent)
            logger.info("finetune[%s]:\n%s", n, format_finetune_rows(results[n]["rows"]))
    return json.loads(json.dumps(results, default=float))
