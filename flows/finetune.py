"""Fine-tuning without forgetting (dual.md §1.4) as a flow that starts from a registered pretrained model.

``params.yaml``::

    finetune:
      digits9:
        source: models:/cdcore-dual-digits_no9@candidate   # or a folder: models/digits_no9
        base: digits_no9                                     # the digits data set the model was trained on
        new_class: 9                                         # excluded from base; fine-tuning learns it

The flow loads the pretrained ε-model (from the MLflow registry by alias, or from a local model folder),
fine-tunes it on the training images of the class its data set excluded, twice with the same steps and
draws — plain fine-tuning, and dual training with the distillation constraint to the frozen pretrained model
(cdcore/dual_finetune.py, where the threshold is calibrated) — evaluates the teacher and both against the
balanced test split, writes ``reports/finetune/<name>.json`` and a plot, logs everything to MLflow, and
registers the constrained model as ``<model_name>-<name>`` (method dual).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import numpy as np
from prefect import flow, get_run_logger, task

from cdcore.config import Params, load_params, parse_params
from cdcore.data import io
from cdcore.data.digits import DigitsSplit
from cdcore.methods.dual.evaluate import fit_classifier
from cdcore.methods.dual import Denoiser, DualCfg, load_dual, save_dual
from cdcore.profiling import resolve_device
from flows import tracking

log = logging.getLogger("cdcore")


def report_path(root: Path, name: str) -> Path:
    return Path(root) / "reports" / "finetune" / f"{name}.json"


def model_path(root: Path, name: str) -> Path:
    return Path(root) / "models" / name / "score.pt"


def load_pretrained(source: str, root: Path) -> tuple[Denoiser, DualCfg, dict]:
    """The pretrained ε-model: ``models:/name@alias`` through the MLflow registry, or a local model folder."""
    if source.startswith("models:/"):
        if not tracking.enabled():
            raise RuntimeError(f"finetune source {source!r} needs the MLflow registry, but tracking is off "
                               "(CDCORE_TRACKING=off); give a local folder such as models/<data set> instead")
        import mlflow

        wrapper = mlflow.pyfunc.load_model(source).unwrap_python_model()
        if not hasattr(wrapper, "model") or not isinstance(wrapper.model, Denoiser):
            raise ValueError(f"{source}: not a dual-trained DDPM (method dual); fine-tuning starts from one")
        meta = {k: v for k, v in wrapper.meta.items() if k != "lambdas"}
        return wrapper.model.cpu(), wrapper.cfg, {"source": source, **meta}
    path = root / source / "score.pt" if (root / source).is_dir() else root / source
    model, cfg, meta = load_dual(path)
    return model, cfg, {"source": str(source), **{k: v for k, v in meta.items() if k != "lambdas"}}


def base_split(root: Path, base: str, seed: int) -> tuple[DigitsSplit, dict[str, np.ndarray], dict]:
    """The base data set's file as a DigitsSplit: its training set, the balanced real digits and the test split."""
    from flows.stages_dual import load_data

    splits, labels, attrs = load_data(root, base)
    split = DigitsSplit(x_train=splits["val"], y_train=labels["val"], x_test=splits["test"], y_test=labels["test"],
                        x_biased=splits["train"], y_biased=labels["train"], minority=tuple(attrs["minority"]),
                        rho=float(attrs["rho"]), seed=seed)
    return split, labels, attrs


def fingerprint(params: Params, name: str, root: Path, teacher_meta: dict) -> str:
    from flows.stages import Layout, _dump, _hash

    exp = params.finetune[name]
    return _hash(["finetune", _dump(exp), _dump(params.dual), io.sha256_file(Layout(root).data(exp.base)),
                  teacher_meta.get("fingerprint"), params.seed])


def run_finetune(params: Params, name: str, root: Path, parent_run_id: Optional[str] = None) -> dict:
    """Fine-tune the pretrained model both ways, evaluate, write the report, register the constrained model."""
    from cdcore.methods.dual.finetune import evaluate_finetune, finetune_variants
    from cdcore.config.dual import finetune_scales

    root = Path(root)
    exp = params.finetune[name]
    out = report_path(root, name)
    teacher, tcfg, tmeta = load_pretrained(exp.source, root)
    fp = fingerprint(params, name, root, tmeta)
    if out.exists() and json.loads(out.read_text()).get("fingerprint") == fp:
        log.info("finetune[%s]: up to date (%s), skipped", name, out)
        return json.loads(out.read_text())
    device = resolve_device(params.dual.device)
    split, labels, attrs = base_split(root, exp.base, params.seed)
    if exp.new_class in set(split.y_biased.tolist()):
        raise ValueError(f"finetune.{name}: class {exp.new_class} is in the training data of {exp.base!r}; "
                         "the pretrained model must not have seen it (add it to the data set's exclude)")
    new = np.isin(split.y_train, [exp.new_class])
    x_new, x_ref = split.x_train[new], split.x_biased
    sc, ft = finetune_scales(params, exp)
    clf = fit_classifier(split.x_train, split.y_train, split.x_test, split.y_test, seed=params.seed + 100,
                         epochs=params.dual.classifier_epochs)
    with tracking.stage_run("finetune", name, parent_run_id) as run:
        if run:
            tracking.log_params({"finetune": name, "source": exp.source, "base": exp.base, "new_class": exp.new_class,
                                 "n_new": int(new.sum()), "device": str(device), "steps": ft.steps, "lr": ft.lr})

        def progress(step: int, row: dict) -> None:
            if run:
                v = row.get("variant", "")
                tracking.log_metrics({f"{v}.{k}".replace("[", "_").replace("]", ""): x for k, x in row.items()
                                      if k not in ("step", "variant") and isinstance(x, (int, float))}, step=step)

        outs = finetune_variants(teacher, x_new, sc, seed=params.seed, device=device, on_progress=progress,
                                 x_ref=x_ref, ft=ft)
        n = params.dual.n_samples
        evals = {"teacher": evaluate_finetune(teacher, clf, split, n, seed=params.seed, device=device)}
        for v, o in outs.items():
            evals[v] = evaluate_finetune(o.model, clf, split, n, seed=params.seed, device=device)
        rows = []
        for v, ev in evals.items():
            o = outs.get(v)
            lam = float(o.final_lambdas[0]) if o is not None and o.lambdas.size else 0.0
            rows.append({"finetune": name, "variant": v, **{k: x for k, x in ev.items() if k != "detail"},
                         "lambda_final": lam, "threshold": float(o.thresholds[0, 0]) if o is not None and v == "constrained" else None,
                         "train_wall_s": float(o.wall_s) if o is not None else 0.0})
        by = {r["variant"]: r for r in rows}
        checks = {
            "constrained_keeps_more_old_digits": bool(by["constrained"]["share_old"] > by["unconstrained"]["share_old"]),
            "constrained_fd_lower": bool(by["constrained"]["fd"] < by["unconstrained"]["fd"]),
        }
        model_out = model_path(root, name)
        # the fine-tuned network is the teacher's architecture and schedule: its config describes it
        save_dual(model_out, outs["constrained"], tcfg, meta={"fingerprint": fp, "dataset": name, "method": "dual",
                                                              "mode": "finetune", "source": exp.source,
                                                              "new_class": exp.new_class})
        report = {"finetune": name, "fingerprint": fp, "source": exp.source, "teacher": tmeta.get("fingerprint"),
                  "base": exp.base, "new_class": exp.new_class, "n_new": int(new.sum()), "device": str(device),
                  "rows": rows, "checks": checks,
                  "classifier_accuracy": float(clf.accuracy)}
        plot(out.with_suffix(".png"), report)
        io.write_text_atomic(out, json.dumps(report, indent=1, default=float))
        if run:
            for r in rows:
                tracking.log_metrics({f"{r['variant']}.{k}": x for k, x in r.items()
                                      if isinstance(x, (int, float)) and not isinstance(x, bool)})
            tracking.log_metrics({k: float(v) for k, v in checks.items()})
            tracking.log_artifact(out, "reports")
            tracking.log_artifact(out.with_suffix(".png"), "plots")
    version = None
    if params.tracking.register_model:
        metrics = {f"{r['variant']}.{k}": r[k] for r in rows for k in ("fd", "share_old", "share_new")}
        version = tracking.register_sampler(model_out, params.tracking, name, metrics, parent_run_id,
                                            name=params.registered_name(name), code=tracking.sampler_code("dual"))
    report["registered_version"] = version
    report["uri"] = f"models:/{params.registered_name(name)}@{params.tracking.alias}" if version else None
    io.write_text_atomic(out, json.dumps(report, indent=1, default=float))
    log.info("finetune[%s]: %s", name, format_rows(rows))
    return report


def format_rows(rows: list[dict]) -> str:
    head = "| variant | share of old digits | share of new | FD (floor) | λ | low-confidence |\n|---|---|---|---|---|---|"
    body = [f"| {r['variant']} | {r['share_old']:.3f} | {r['share_new']:.3f} | {r['fd']:.1f} ({r['fd_floor']:.1f}) | "
            f"{r['lambda_final']:.3g} | {r['low_conf_rate']:.3f} |" for r in rows]
    return "\n".join([head, *body])


def plot(path: Path, report: dict) -> None:
    """Class histograms (confusion-corrected) of the teacher and both fine-tuned models, and their FD."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 1]})
    c = np.arange(10)
    w = 0.8 / len(rows)
    for i, r in enumerate(rows):
        axes[0].bar(c - 0.4 + (i + 0.5) * w, r["hist_corrected"], w, label=r["variant"])
    axes[0].axhline(0.1, color="k", lw=0.8)
    axes[0].set_xticks(c)
    axes[0].set_xlabel(f"class (new: {report['new_class']})")
    axes[0].set_ylabel("share of samples (confusion-corrected)")
    axes[0].legend()
    axes[1].bar([r["variant"] for r in rows], [r["fd"] for r in rows], color=["C0", "C1", "C2"][: len(rows)])
    axes[1].axhline(rows[0]["fd_floor"], color="k", ls=":", label="floor")
    axes[1].set_ylabel("Fréchet distance to balanced test")
    axes[1].tick_params(axis="x", rotation=30)
    axes[1].legend()
    fig.suptitle(f"{report['finetune']}: fine-tuning on the new class, with and without the distillation constraint")
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


@task(name="finetune-stage", retries=1, retry_delay_seconds=2)
def finetune_task(params_raw: dict, name: str, root: str, parent_run_id: Optional[str]) -> dict:
    return run_finetune(parse_params(params_raw), name, Path(root), parent_run_id)


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
            logger.info("finetune[%s]:\n%s", n, format_rows(results[n]["rows"]))
    return json.loads(json.dumps(results, default=float))
