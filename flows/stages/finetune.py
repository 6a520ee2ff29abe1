"""Fine-tuning without forgetting (dual.md §1.4) as a stage that starts from a registered pretrained model.

``params.yaml``::

    finetune:
      digits9:
        source: models:/cdcore-dual-digits_no9@candidate   # or a folder: models/digits_no9
        base: digits_no9                                     # the digits data set the model was trained on
        new_class: 9                                         # excluded from base; fine-tuning learns it

The pretrained ε-model (from the MLflow registry by alias, or a local model folder) is fine-tuned on the class
its data set excluded, twice with the same steps and draws: plainly, and under the distillation constraint to
the frozen teacher (cdcore/methods/dual/finetune.py calibrates the threshold). The teacher and both are
evaluated on the balanced test split; the constrained model is registered as ``<model_name>-<name>``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cdcore.config import ConfigError, Params
from cdcore.config.dual import finetune_scales
from cdcore.data import io
from cdcore.methods.dual import Denoiser, DualCfg, load_dual, save_dual
from cdcore.methods.dual.evaluate import finetune_rows, fit_classifier
from cdcore.methods.dual.finetune import evaluate_finetune, finetune_variants
from cdcore.methods.dual.io import digits_split_of
from cdcore.profiling import resolve_device
from cdcore.report.dual import finetune_comparison
from cdcore.report.summary import format_finetune_rows
from flows import registry, tracking
from flows.cache import Stage, digest, plain, stage
from flows.layout import Layout

log = logging.getLogger("cdcore")


def load_pretrained(source: str, root: Path) -> tuple[Denoiser, DualCfg, dict]:
    """The pretrained ε-model: ``models:/name@alias`` through the MLflow registry, or a local model folder."""
    if source.startswith("models:/"):
        if not tracking.enabled():
            raise ConfigError(f"finetune source {source!r} needs the MLflow registry, but tracking is off "
                              "(CDCORE_TRACKING=off); give a local folder such as models/<data set> instead")
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            wrapper = mlflow.pyfunc.load_model(source).unwrap_python_model()
        except MlflowException as e:
            raise ConfigError(f"finetune source {source!r} cannot be loaded from the registry "
                              f"({e.message.splitlines()[0][:200]}); run `cdcore register` for its data set first, "
                              "or give a local folder such as models/<data set>") from None
        if not hasattr(wrapper, "model") or not isinstance(wrapper.model, Denoiser):
            raise ConfigError(f"{source}: not a dual-trained DDPM (method dual); fine-tuning starts from one")
        meta = {k: v for k, v in wrapper.meta.items() if k != "lambdas"}
        return wrapper.model.cpu(), wrapper.cfg, {"source": source, **meta}
    path = root / source / "score.pt" if (root / source).is_dir() else root / source
    model, cfg, meta = load_dual(path)
    return model, cfg, {"source": str(source), **{k: v for k, v in meta.items() if k != "lambdas"}}


def _teacher(params: Params, name: str, root: Path) -> tuple[Denoiser, DualCfg, dict]:
    return load_pretrained(params.finetune[name].source, root)


def fingerprint(params: Params, name: str, root: Path, teacher: tuple[Denoiser, DualCfg, dict]) -> str:
    exp = params.finetune[name]
    return digest(["finetune", plain(exp), plain(params.dual), io.sha256_file(Layout(root).data(exp.base)),
                   teacher[2].get("fingerprint"), params.seed])


def _variant_metric(row: dict) -> dict:
    v = row.get("variant", "")
    return {f"{v}.{k}".replace("[", "_").replace("]", ""): x for k, x in row.items()
            if k not in ("step", "variant") and isinstance(x, (int, float))}


def _register(params: Params, st: Stage, report: dict) -> dict:
    """Register the constrained model (outside the stage's run: registering opens a run of its own)."""
    version, model, alias = None, params.registered_name(st.name), params.tracking.alias
    if params.tracking.register_model:
        exp = params.finetune[st.name]
        card = (f"A digits DDPM fine-tuned from `{exp.source}` on the class {exp.new_class} it never saw, under the "
                "distillation (KL) constraint to its teacher, so that it keeps the old classes (dual.md §1.4).\n\n"
                f"{format_finetune_rows(report['rows'])}\n\n"
                f'`mlflow.pyfunc.load_model("models:/{model}@{alias}").predict(pd.DataFrame({{"n": [64], "seed": '
                '[0]}))` returns an (n, 64) float32 array of 8×8 digits in [−1, 1].')
        version, _ = registry.register(
            st.layout.finetune_model(st.name), name=model, alias=alias, dataset=st.name, root=st.root,
            code=tracking.sampler_code("dual"), parent_run_id=st.parent_run_id, description=card,
            metrics={f"{r['variant']}.{k}": r[k] for r in report["rows"] for k in ("fd", "share_old", "share_new")},
            tags={"cdcore.method": "dual", "cdcore.constraint": "kl_distillation", "cdcore.metric": "fd",
                  "cdcore.floor": f"{report['rows'][0]['fd_floor']:.6g}"},
            max_n=params.tracking.max_predict_n, output_shape=(64,))
    report["registered_version"] = version
    report["uri"] = f"models:/{model}@{alias}" if version else None
    st.write_json(st.out, report, indent=1, default=float)
    log.info("finetune[%s]: %s", st.name, format_finetune_rows(report["rows"]))
    return report


@stage("finetune", Layout.finetune_report, fingerprint, load=_teacher,
       reuse=lambda out: json.loads(out.read_text()), after=_register)
def run_finetune(params: Params, st: Stage) -> dict[str, Any]:
    """Fine-tune the pretrained model both ways, evaluate, write the report (then register the constrained one)."""
    exp, (teacher, tcfg, tmeta) = params.finetune[st.name], st.inputs
    device = resolve_device(params.dual.device)
    split, _, _ = digits_split_of(st.layout.data(exp.base), params.seed)
    if exp.new_class in set(split.y_biased.tolist()):
        raise ValueError(f"finetune.{st.name}: class {exp.new_class} is in the training data of {exp.base!r}; "
                         "the pretrained model must not have seen it (add it to the data set's exclude)")
    new = np.isin(split.y_train, [exp.new_class])
    sc, ft = finetune_scales(params, exp)
    clf = fit_classifier(split.x_train, split.y_train, split.x_test, split.y_test, seed=params.seed + 100,
                         epochs=params.dual.classifier_epochs)
    st.log_params({"finetune": st.name, "source": exp.source, "base": exp.base, "new_class": exp.new_class,
                   "n_new": int(new.sum()), "device": str(device), "steps": ft.steps, "lr": ft.lr})
    outs = finetune_variants(teacher, split.x_train[new], sc, seed=params.seed, device=device,
                             on_progress=st.progress(metrics=_variant_metric), x_ref=split.x_biased, ft=ft)
    n = params.dual.n_samples
    evals = {"teacher": evaluate_finetune(teacher, clf, split, n, seed=params.seed, device=device)}
    for v, o in outs.items():
        evals[v] = evaluate_finetune(o.model, clf, split, n, seed=params.seed, device=device)
    rows, checks = finetune_rows(st.name, evals, outs)
    # the fine-tuned network is the teacher's architecture and schedule: its config describes it
    save_dual(st.layout.finetune_model(st.name), outs["constrained"], tcfg,
              meta={"fingerprint": st.fingerprint, "dataset": st.name, "method": "dual", "mode": "finetune",
                    "source": exp.source, "new_class": exp.new_class})
    report = {"finetune": st.name, "fingerprint": st.fingerprint, "source": exp.source,
              "teacher": tmeta.get("fingerprint"), "base": exp.base, "new_class": exp.new_class,
              "n_new": int(new.sum()), "device": str(device), "rows": rows, "checks": checks,
              "classifier_accuracy": float(clf.accuracy)}
    finetune_comparison(st.layout.finetune_png(st.name), report)
    st.write_json(st.out, report, indent=1, default=float)
    st.log_rows(rows, key="variant")
    st.log_metrics({k: float(v) for k, v in checks.items()})
    st.log_artifact(st.out, "reports")
    st.log_artifact(st.layout.finetune_png(st.name), "plots")
    return report
