"""The pipeline's stages as plain functions, dispatched by each data set's method (``params.method_for``).

One code path whichever tool drives it: the Prefect flow wraps these in tasks, the ``cdcore`` command calls
them directly, and ``dvc.yaml`` runs that command. Each method's stages are in its module here (landing, namm,
dual, finetune); what every stage does around its work (lock, fingerprint, skip, MLflow run) is flows/cache.py.

``constraint_of`` and ``load_model`` stay importable from here: landing samplers registered before issue 23 read
them from this path in their logged code.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional

from cdcore.benchmarks.tables import render as render_bench_tables
from cdcore.checkpoint import load_checkpoint
from cdcore.config import Params
from cdcore.constraints import from_record as constraint_of
from cdcore.data import io
from cdcore.methods.landing.io import load_model
from cdcore.report.summary import format_table, summary_markdown
from cdcore.methods.errors import DivergenceError
from cdcore.report.summary import model_card
from flows import registry, tracking
from flows.cache import Stage, digest, stage
from flows.layout import OUTPUT_FOLDERS, Layout
from flows.stages import dual, landing, namm

__all__ = ["Layout", "clean", "constraint_of", "format_table", "fp_data", "fp_mirror", "fp_sample", "fp_train",
           "load_model", "run_data", "run_evaluate", "run_mirror", "run_register", "run_report", "run_sample",
           "run_train"]

log = logging.getLogger("cdcore")
METHODS: dict[str, ModuleType] = {"landing": landing, "namm": namm, "dual": dual}


def method_stages(params: Params, name: str) -> ModuleType:
    """The stage module of a data set's method."""
    return METHODS[params.method_for(name)]


def _by_method(attr: str, doc: str) -> Callable:
    def call(params: Params, name: str, root: Path, *args: Any, **kwargs: Any) -> Any:
        return getattr(method_stages(params, name), attr)(params, name, root, *args, **kwargs)

    call.__name__ = call.__qualname__ = attr
    call.__doc__ = doc
    return call


fp_data = _by_method("fp_data", "The data stage's fingerprint: what its output depends on.")
fp_train = _by_method("fp_train", "The train stage's fingerprint (the data file's hash among its inputs).")
fp_sample = _by_method("fp_sample", "The sample stage's fingerprint (the model file's hash among its inputs).")
run_data = _by_method("run_data", "Read or generate one data set, check it against its constraint, split, write HDF5.")
run_train = _by_method("run_train", "Train the data set's model with its method; resumable from its checkpoint.")
run_sample = _by_method("run_sample", "Draw the configured samplers' samples from the trained model.")
run_evaluate = _by_method("run_evaluate", "Score every sampler against the test split; write the report and map.")


def fp_mirror(params: Params, name: str, root: Path) -> str:
    if params.method_for(name) != "namm":
        return digest(["no-mirror", params.method_for(name)])
    return namm.fp_mirror(params, name, root)


@stage("mirror", Layout.no_mirror, track=False)
def _no_mirror(params: Params, st: Stage) -> Path:
    """For ``dvc.yaml``, whose foreach stage cannot be skipped per data set: a record that none is needed."""
    io.write_text_atomic(st.out, json.dumps({"dataset": st.name, "method": params.method_for(st.name), "mirror": None,
                                             "why": "only method namm fits a mirror map"}, indent=1) + "\n")
    return st.out


def run_mirror(params: Params, name: str, root: Path, parent_run_id: Optional[str] = None) -> Path:
    """Fit the NAMM mirror maps g, f (method namm); a data set of another method records that it needs none."""
    if params.method_for(name) != "namm":
        return _no_mirror(params, name, root, parent_run_id)
    return namm.run_mirror(params, name, root, parent_run_id)


def _registrable(name: str, method: str, rows: list[dict]) -> None:
    """A diverged model is never registered: NaN/Inf scores (or violations, where a point has one: landing), or
    every sample dropped."""
    for r in rows:
        keys = ("score", "violation_max") if method == "landing" else ("score",)
        bad = [k for k in keys if not math.isfinite(float(r.get(k, math.nan)))]
        if bad or r.get("drop_rate", 0.0) >= 1.0:
            why = f"{', '.join(bad)} not finite" if bad else "every sample dropped (drop rate 1)"
            raise DivergenceError(f"{name}: not registered: sampler {r['sampler']!r} has {why} on the test split, "
                                  "so the model diverged; lower train.lr (or check the data), re-train and re-run")


@stage("register", Layout.registry, track=False)
def run_register(params: Params, st: Stage) -> Optional[str]:
    """Register the trained sampler with its scores, lineage and description; the alias moves last."""
    version, model, alias = None, params.registered_name(st.name), params.tracking.alias
    if params.tracking.register_model:
        rows = io.read_json(st.layout.report(st.name), f"run `cdcore evaluate --dataset {st.name}` first")["rows"]
        method, meta = params.method_for(st.name), load_checkpoint(st.layout.model(st.name))["meta"]
        _registrable(st.name, method, rows)
        h_w_c = meta.get("shape") if method == "namm" else None
        shape = (h_w_c[2], h_w_c[0], h_w_c[1]) if h_w_c else (int(meta.get("dim", 64)),)
        first = rows[0]
        constraint = meta.get("constraint") or meta.get("problem") or ("kl_classes" if method == "dual" else "?")
        tags = {"cdcore.method": method, "cdcore.constraint": str(constraint), "cdcore.metric": str(first["metric"]),
                "cdcore.floor": f"{first['score_floor']:.6g}", "cdcore.score": f"{first['score']:.6g}"}
        version, created = registry.register(
            st.layout.model(st.name), name=model, alias=alias, dataset=st.name, code=tracking.sampler_code(method),
            root=st.root, metrics={f"{r['sampler']}.{k}": r[k] for r in rows
                                   for k in ("score", "jsd", "violation_max", "drop_rate")},
            tags=tags, description=model_card(model, alias, st.name, method, str(constraint), shape, rows,
                                              params.tracking.max_predict_n),
            max_n=params.tracking.max_predict_n, output_shape=shape, parent_run_id=st.parent_run_id)
        if version and not created:
            log.info("register[%s]: unchanged model, kept version %s of %s", st.name, version, model)
    st.write_json(st.out, {"dataset": st.name, "model": model, "version": version, "alias": alias if version else None,
                           "uri": f"models:/{model}@{alias}" if version else None}, indent=1)
    return version


def run_report(params: Params, root: Path, names: Optional[list[str]] = None) -> dict:
    """Collect every data set's rows into reports/summary.json and a Markdown table."""
    lay = Layout(root)
    names = names or list(params.datasets)
    rows = []
    for n in names:
        rows += io.read_json(lay.report(n), f"run `cdcore evaluate --dataset {n}` first")["rows"]
    finetune = {n: io.read_json(lay.finetune_report(n), f"re-run `cdcore finetune --name {n}`")
                for n, exp in params.finetune.items()
                if exp.base in names and lay.finetune_report(n).exists()}
    summary = {"method": params.method, "rows": rows, "finetune": finetune}
    io.write_text_atomic(lay.summary(), json.dumps(summary, indent=1))
    io.write_text_atomic(lay.summary_md(), summary_markdown(rows, finetune))
    # the benchmark tables, rendered from the benches' JSON reports (reports/bench/<suite>.json)
    io.write_text_atomic(lay.bench_tables(), render_bench_tables(lay.bench("")))
    return summary


def clean(root: Path) -> None:
    """Remove every stage output (not the MLflow store): for a from-scratch run.

    ``.cache/locks`` stays: deleting a lock file another run holds would let a third run take a new one.
    """
    for sub in OUTPUT_FOLDERS:
        p = Path(root) / sub
        if p.is_dir() and sub == ".cache":
            for child in p.iterdir():
                if child.name != "locks":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        elif p.exists():
            shutil.rmtree(p)
