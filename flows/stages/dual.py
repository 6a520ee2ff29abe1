"""The stages of ``method: dual``: digits data -> KL-constrained DDPM training -> sampling -> honest evaluation.

The model, sampler and evaluation are those of ``cdcore bench dual``, where the defaults of ``params.yaml``'s
``dual:`` section were measured; the pipeline trains the configured variant only (the baselines are the bench's).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from cdcore.config import DigitsDataset, Params
from cdcore.config.dual import dual_cfg, mode_of
from cdcore.data import io
from cdcore.data.digits import NUM_CLASSES, DigitsCfg, biased_splits
from cdcore.methods.dual import DualData, load_dual, oracle_lambdas, sample_ddpm, save_dual, train_dual
from cdcore.methods.dual.evaluate import evaluation_rows, fit_classifier, report_classes, training_history
from cdcore.methods.dual.io import load_digits_file
from cdcore.profiling import measure, resolve_device
from cdcore.report import dual as figures
from flows import tracking
from flows.cache import Stage, digest, plain, stage
from flows.layout import Layout

log = logging.getLogger("cdcore")


# ----- fingerprints --------------------------------------------------------------------------------------------------
def fp_data(params: Params, name: str, root: Path) -> str:
    return digest(["dual-data", plain(params.dataset(name)), params.seed, io.SCHEMA_VERSION])


def fp_train(params: Params, name: str, root: Path) -> str:
    ds = params.dataset(name)
    return digest(["dual-train", io.sha256_file(Layout(root).data(name)), plain(params.dual), ds.mode, ds.train_steps,
                   params.seed])


def fp_sample(params: Params, name: str, root: Path) -> str:
    return digest(["dual-sample", io.sha256_file(Layout(root).model(name)), params.dual.n_samples, params.seed])


# ----- stages ----------------------------------------------------------------------------------------------------------
@stage("data", Layout.data, fp_data)
def run_data(params: Params, st: Stage) -> Path:
    """Biased training digits (train), balanced real digits for the classifier (val), balanced test (test)."""
    ds: DigitsDataset = params.dataset(st.name)
    splits, labels, counts = biased_splits(DigitsCfg(rho=ds.rho if ds.minority else 1.0, minority=ds.minority or [0],
                                                     test_fraction=ds.test_fraction, seed=params.seed), ds.exclude)
    attrs = {"constraint": ds.constraint, "dim": int(splits["train"].shape[1]), "method": "dual",
             "fingerprint": st.fingerprint, "minority": ds.minority, "exclude": ds.exclude, "rho": ds.rho,
             "seed": params.seed, "train_class_counts": counts.tolist(), "source": "sklearn.datasets.load_digits",
             "source_sha256": "", "splits": "train: the generator's (biased) data; val: balanced real digits "
                                            "(classifier); test: balanced held-out (never trained on)"}
    io.write_dataset(st.out, splits, attrs, labels=labels)
    st.log_params({"dataset": st.name, "method": "dual", **{f"data.{k}": v for k, v in plain(ds).items()}})
    st.log_metrics({**{f"n_{k}": len(v) for k, v in splits.items()},
                    **{f"train_count/{c}": int(n) for c, n in enumerate(counts)}})
    log.info("data[%s]: %d training digits (class counts %s) -> %s", st.name, len(splits["train"]), counts.tolist(),
             st.out)
    return st.out


def _metric_name(key: str) -> str:
    return key.replace("[", "_").replace("]", "")


@stage("train", Layout.model, fp_train)
def run_train(params: Params, st: Stage) -> Path:
    """Primal-dual training; λ, the predicted mixture shares and the losses go to MLflow at every log step."""
    ds: DigitsDataset = params.dataset(st.name)
    splits, labels, _ = load_digits_file(st.layout.data(st.name))
    data = DualData.from_labelled(splits["train"], labels["train"], list(ds.minority), num_classes=NUM_CLASSES)
    mode = mode_of(params, st.name)
    cfg = dual_cfg(params, st.name, oracle_lambdas(data.class_shares, list(ds.minority)) if mode == "reweight" else None)
    device = resolve_device(params.dual.device)
    st.log_params({"dataset": st.name, "method": "dual", "mode": mode, "device": str(device),
                   **tracking.flatten({"dual": json.loads(cfg.model_dump_json())})})
    progress = st.progress(
        metrics=lambda row: {_metric_name(k): v for k, v in row.items() if k != "step" and isinstance(v, (int, float))},
        echo=lambda row: {"loss": row.get("loss_objective", float("nan")), "elapsed_s": row.get("elapsed_s", 0.0)})
    outc = train_dual(data, cfg, seed=params.seed, device=device, checkpoint=st.checkpoint(), on_progress=progress)
    save_dual(st.out, outc, cfg, meta={
        "fingerprint": st.fingerprint, "dataset": st.name, "method": "dual", "mode": mode, "minority": ds.minority,
        "exclude": ds.exclude, "class_shares": data.class_shares.tolist(), "lambda_final": outc.final_lambdas.tolist(),
        "seed": params.seed, "train_wall_s": outc.wall_s, "resumed_from": outc.resumed_from})
    hist = training_history(outc, data.class_shares, ds.minority)
    st.history(hist, lambda png: figures.training(png, hist, ds.minority, st.name), indent=None, png="lambda.png")
    st.log_metrics({"train_wall_s": outc.wall_s,
                    **{f"lambda_final/{n}": float(v) for n, v in zip(outc.constraint_names, outc.final_lambdas)}})
    log.info("train[%s]: dual (%s) %d steps in %.1fs, λ = %s -> %s", st.name, mode, cfg.train.steps, outc.wall_s,
             np.round(outc.final_lambdas, 4).tolist(), st.out)
    return st.out


@stage("sample", Layout.samples, fp_sample)
def run_sample(params: Params, st: Stage) -> Path:
    device = resolve_device(params.dual.device)
    model, cfg, meta = load_dual(st.layout.model(st.name), device)
    with measure(device) as m:
        x = sample_ddpm(model, params.dual.n_samples, seed=params.seed + 1, device=device, cfg=cfg.sampler)
    sampler = meta.get("mode", "dual")
    io.write_samples(st.out, {sampler: {"x": x.numpy(), "dropped": np.zeros(len(x), bool), "nfe": model.T,
                                        "newton_iters_mean": 0.0, "wall_s": m.wall_s, "peak_mem_mb": m.peak_mem_mb,
                                        "device": str(device)}},
                     {"fingerprint": st.fingerprint, "dataset": st.name, "constraint": "kl_classes",
                      "device": str(device), "method": "dual"})
    st.log_metrics({f"{sampler}.wall_s": m.wall_s})
    log.info("sample[%s/%s]: %d samples in %.2fs", st.name, sampler, len(x), m.wall_s)
    return st.out


@stage("evaluate", Layout.report)
def run_evaluate(params: Params, st: Stage) -> list[dict]:
    """Class shares (raw and confusion-corrected, with bootstrap CIs) and the classifier-feature Fréchet distance."""
    ds: DigitsDataset = params.dataset(st.name)
    splits, labels, _ = load_digits_file(st.layout.data(st.name))
    groups, _ = io.read_samples(st.layout.samples(st.name))
    clf = fit_classifier(splits["val"], labels["val"], splits["test"], labels["test"], seed=params.seed + 100,
                         epochs=params.dual.classifier_epochs)
    shown = report_classes(ds.minority, ds.exclude)
    rows, evs = evaluation_rows(st.name, groups, clf, splits, labels, ds.minority, shown, params.seed)
    figures.digits_and_shares(st.layout.map_png(st.name), groups, evs, shown, st.name)
    return st.evaluation({"dataset": st.name, "method": "dual", "rows": rows,
                          "classifier_confusion": clf.confusion.tolist()})
