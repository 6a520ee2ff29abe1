"""The pipeline's stages as plain functions, dispatched by each data set's method (``params.method_for``).

One code path whichever tool drives it: the Prefect flow wraps these in tasks, the ``cdcore`` command calls
them directly, and ``dvc.yaml`` runs that command. Each method's stages are in its module here (landing, namm,
dual, finetune); what every stage does around its work (lock, fingerprint, skip, MLflow run) is flows/cache.py.

``constraint_of`` and ``load_model`` stay importable from here: landing samplers registered before issue 23 read
them from this path in their logged code.
"""

from __future__ import annotations

import json
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
from flows import tracking
from flows.cache import Stage, digest, stage
from flows.layout import OUTPUT_FOLDERS, Layout
from flows.stages import dual, landing, namm
from flows.stages.finetune import format_rows

__all__ = ["Layout", "clean", "constraint_of", "format_table", "fp_data", "fp_mirror", "fp_sample", "fp_train",
           "load_model", "run_data", "run_evaluate", "run_mirror", "run_register", "run_report", "run_sample",
           "run_train"]

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


@stage("register", Layout.registry, track=False)
def run_register(params: Params, st: Stage) -> Optional[str]:
    """Register the trained sampler in MLflow with its metrics, and point the alias at it."""
    version = None
    model = params.registered_name(st.name)
    if params.tracking.register_model:
        report = json.loads(st.layout.report(st.name).read_text())
        metrics = {f"{r['sampler']}.{k}": r[k] for r in report["rows"]
                   for k in ("score", "jsd", "violation_max", "drop_rate")}
        method = params.method_for(st.name)
        shape = None
        if method == "namm":
            h, w, c = load_checkpoint(st.layout.model(st.name))["meta"]["shape"]
            shape = (c, h, w)
        version = tracking.register_sampler(st.layout.model(st.name), params.tracking, st.name, metrics,
                                            st.parent_run_id, name=model, code=tracking.sampler_code(method),
                                            output_shape=shape)
        if version is not None:
            from flows.promote import record_lineage

            # params, dvc.lock hashes and git commit on every version, so any version can be traced back
            record_lineage(model, version, root=st.root, dataset=st.name)
    st.write_json(st.out, {"dataset": st.name, "model": model, "version": version,
                           "alias": params.tracking.alias if version else None,
                           "uri": f"models:/{model}@{params.tracking.alias}" if version else None}, indent=1)
    return version


def run_report(params: Params, root: Path, names: Optional[list[str]] = None) -> dict:
    """Collect every data set's rows into reports/summary.json and a Markdown table."""
    lay = Layout(root)
    names = names or list(params.datasets)
    rows = []
    for n in names:
        path = lay.report(n)
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; run `cdcore evaluate --dataset {n}` first")
        rows += json.loads(path.read_text())["rows"]
    finetune = {n: json.loads(lay.finetune_report(n).read_text()) for n, exp in params.finetune.items()
                if exp.base in names and lay.finetune_report(n).exists()}
    summary = {"method": params.method, "rows": rows, "finetune": finetune}
    io.write_text_atomic(lay.summary(), json.dumps(summary, indent=1))
    text = format_table(rows) + "\n"
    for n, rep in finetune.items():
        text += f"\n### fine-tuning {n} (from {rep['source']})\n\n{format_rows(rep['rows'])}\n"
    io.write_text_atomic(lay.summary_md(), text)
    # the benchmark tables, rendered from the benches' JSON reports (reports/bench/<suite>.json)
    io.write_text_atomic(lay.bench_tables(), render_bench_tables(lay.bench("")))
    return summary


def format_table(rows: list[dict]) -> str:
    cols = [("dataset", "{}"), ("sampler", "{}"), ("metric", "{}"), ("score", "{:.3f}"), ("score_floor", "{:.3f}"),
            ("score_reference", "{:.3f}"),
            ("violation_max", "{:.1e}"), ("drop_rate", "{:.4f}"), ("nfe", "{}"), ("newton_iters", "{:.1f}"),
            ("wall_s", "{:.2f}"), ("peak_mem_mb", "{:.0f}")]
    head = "| " + " | ".join(c for c, _ in cols) + " | detail |"
    sep = "|" + "|".join("---" for _ in cols) + "|---|"
    body = ["| " + " | ".join(f.format(r[c]) for c, f in cols) + f" | {_detail(r)} |" for r in rows]
    return "\n".join([head, sep, *body])


def _detail(r: dict) -> str:
    """What the method promises, per row: the feasibility of NAMM samples, the class shares of dual training."""
    if r.get("method") == "namm":
        return f"constraint distance mean {r['constraint_mean']:.2g} (held-out data {r['data_constraint_mean']:.2g})"
    if r.get("method") == "dual":
        shares = ", ".join(f"{k.split('/')[1]}: {v:.3f}" for k, v in r.items() if k.startswith("share/"))
        return f"corrected shares {shares} (uniform 0.100)"
    return f"target {r['score_target']:.3f}" if r.get("score_target") == r.get("score_target") else ""


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
