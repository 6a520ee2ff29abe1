"""The stages of ``method: dual``: digits data -> KL-constrained DDPM training -> sampling -> honest evaluation.

Same contract as flows/stages.py (which dispatches here). The model, sampler and evaluation are the ones of
``cdcore bench dual`` (cdcore/dual_bench.py), where the defaults of ``params.yaml``'s ``dual:`` section were
measured; the pipeline trains the configured variant only (the baselines are the bench's job).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from cdcore.config import DigitsDataset, Params
from cdcore.data import io
from cdcore.data.digits import NUM_CLASSES, DigitsCfg, load_digits_split
from cdcore.methods.dual.evaluate import evaluate_digits, fit_classifier
from cdcore.methods.dual import DualData, load_dual, oracle_lambdas, sample_ddpm, save_dual, train_dual
from cdcore.profiling import measure, resolve_device
from flows import tracking
from cdcore.config.dual import dual_cfg, mode_of

log = logging.getLogger("cdcore")
SHARE_TOL = 0.03     # issue #5: each minority class within 0.03 of uniform


def report_classes(ds: DigitsDataset) -> list[int]:
    """The classes whose shares the report shows: the constrained ones, else the excluded ones."""
    return list(ds.minority or ds.exclude or [4, 5, 7])


# ----- fingerprints ------------------------------------------------------------------
def fp_data(params: Params, name: str, root: Path) -> str:
    from flows.stages import _dump, _hash

    return _hash(["dual-data", _dump(params.dataset(name)), params.seed, io.SCHEMA_VERSION])


def fp_train(params: Params, name: str, root: Path) -> str:
    from flows.stages import Layout, _dump, _hash

    ds = params.dataset(name)
    return _hash(["dual-train", io.sha256_file(Layout(root).data(name)), _dump(params.dual), ds.mode, ds.train_steps,
                  params.seed])


def fp_sample(params: Params, name: str, root: Path) -> str:
    from flows.stages import Layout, _hash

    return _hash(["dual-sample", io.sha256_file(Layout(root).model(name)), params.dual.n_samples, params.seed])


# ----- stages ---------------------------------------------------------------------------
def run_data(params: Params, name: str, root: Path, parent_run_id: Optional[str] = None) -> Path:
    """Biased training digits (train), balanced real digits for the classifier (val), balanced test (test)."""
    from flows.stages import Layout, _dump, _up_to_date

    out = Layout(root).data(name)
    fp = fp_data(params, name, root)
    if _up_to_date(out, fp, "data", name):
        return out
    ds: DigitsDataset = params.dataset(name)
    split = load_digits_split(DigitsCfg(rho=ds.rho if ds.minority else 1.0, minority=ds.minority or [0],
                                        test_fraction=ds.test_fraction, seed=params.seed))
    keep = ~np.isin(split.y_biased, ds.exclude)
    splits = {"train": split.x_biased[keep], "val": split.x_train, "test": split.x_test}
    labels = {"train": split.y_biased[keep], "val": split.y_train, "test": split.y_test}
    counts = np.bincount(labels["train"], minlength=NUM_CLASSES)
    attrs = {"constraint": ds.constraint, "dim": int(splits["train"].shape[1]), "method": "dual", "fingerprint": fp,
             "minority": ds.minority, "exclude": ds.exclude, "rho": ds.rho, "seed": params.seed,
             "train_class_counts": counts.tolist(), "source": "sklearn.datasets.load_digits", "source_sha256": "",
             "splits": "train: the generator's (biased) data; val: balanced real digits (classifier); "
                       "test: balanced held-out (never trained on)"}
    io.write_dataset(out, splits, attrs, labels=labels)
    with tracking.stage_run("data", name, parent_run_id) as run:
        if run:
            tracking.log_params({"dataset": name, "method": "dual", **{f"data.{k}": v for k, v in _dump(ds).items()}})
            tracking.log_metrics({**{f"n_{k}": len(v) for k, v in splits.items()},
                                  **{f"train_count/{c}": int(n) for c, n in enumerate(counts)}})
    log.info("data[%s]: %d training digits (class counts %s) -> %s", name, len(splits["train"]), counts.tolist(), out)
    return out


def load_data(root: Path, name: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    from flows.stages import Layout

    path = Layout(root).data(name)
    splits, attrs = io.read_dataset(path)
    if attrs.get("method") != "dual":
        raise io.DataError(f"{path}: not a digits data file (method {attrs.get('method')!r}); re-run `cdcore data`")
    return splits, io.read_labels(path), attrs


def run_train(params: Params, name: str, root: Path, parent_run_id: Optional[str] = None,
              on_progress: Optional[Callable[[int, dict], None]] = None) -> Path:
    """Primal-dual training; λ, the predicted mixture shares and the losses go to MLflow at every log step."""
    from flows.stages import Layout, _up_to_date

    lay = Layout(root)
    out = lay.model(name)
    fp = fp_train(params, name, root)
    if _up_to_date(out, fp, "train", name):
        return out
    ds: DigitsDataset = params.dataset(name)
    splits, labels, attrs = load_data(root, name)
    data = DualData.from_labelled(splits["train"], labels["train"], list(ds.minority), num_classes=NUM_CLASSES)
    lams = oracle_lambdas(data.class_shares, list(ds.minority)) if mode_of(params, name) == "reweight" else None
    cfg = dual_cfg(params, name, lams)
    device = resolve_device(params.dual.device)
    ckpt = lay.checkpoint(name, fp)
    for stale in ckpt.parent.glob(f"{name}-*.ckpt"):
        if stale != ckpt:
            stale.unlink()
    with tracking.stage_run("train", name, parent_run_id) as run:
        if run:
            tracking.log_params({"dataset": name, "method": "dual", "mode": mode_of(params, name), "device": str(device),
                                 **tracking.flatten({"dual": json.loads(cfg.model_dump_json())})})

        def progress(step: int, row: dict) -> None:
            if run:
                tracking.log_metrics({k.replace("[", "_").replace("]", ""): v for k, v in row.items()
                                      if k != "step" and isinstance(v, (int, float))}, step=step)
            if on_progress:
                on_progress(step, {"loss": row.get("loss_objective", float("nan")), "elapsed_s": row.get("elapsed_s", 0.0)})

        outc = train_dual(data, cfg, seed=params.seed, device=device, checkpoint=ckpt, on_progress=progress)
        meta = {"fingerprint": fp, "dataset": name, "method": "dual", "mode": mode_of(params, name),
                "minority": ds.minority, "exclude": ds.exclude, "class_shares": data.class_shares.tolist(),
                "lambda_final": outc.final_lambdas.tolist(), "seed": params.seed, "train_wall_s": outc.wall_s,
                "resumed_from": outc.resumed_from}
        save_dual(out, outc, cfg, meta=meta)
        hist = {"lambdas": outc.lambdas.tolist(), "constraint_losses": outc.constraint_losses.tolist(),
                "objective": outc.objective.tolist(), "constraint_names": outc.constraint_names,
                "predicted_shares": [_pred(data.class_shares, ds.minority, lam) for lam in outc.lambdas]}
        io.write_text_atomic(lay.model_dir(name) / "history.json", json.dumps(hist))
        plot_training(lay.model_dir(name) / "lambda.png", hist, ds, name)
        if run:
            tracking.log_metrics({"train_wall_s": outc.wall_s,
                                  **{f"lambda_final/{n}": float(v) for n, v in zip(outc.constraint_names, outc.final_lambdas)}})
            tracking.log_artifact(lay.model_dir(name) / "lambda.png", "plots")
    log.info("train[%s]: dual (%s) %d steps in %.1fs, λ = %s -> %s", name, mode_of(params, name), cfg.train.steps,
             outc.wall_s, np.round(outc.final_lambdas, 4).tolist(), out)
    return out


def _pred(shares: np.ndarray, minority: list[int], lam: np.ndarray) -> list[float]:
    from cdcore.methods.dual import predicted_shares

    return predicted_shares(shares, list(minority), np.asarray(lam)).tolist() if len(minority) else shares.tolist()


def plot_training(path: Path, hist: dict, ds: DigitsDataset, name: str) -> None:
    """λ per constraint and the class shares the λ-mixture predicts (dual.md §1.5), per dual step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lam = np.asarray(hist["lambdas"])
    pred = np.asarray(hist["predicted_shares"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    if lam.size:
        for i, n in enumerate(hist["constraint_names"]):
            axes[0].plot(lam[:, i], label=f"λ {n}")
        axes[0].legend()
    axes[0].set_xlabel("dual step")
    axes[0].set_title("dual variables")
    for c in range(pred.shape[1]):
        style = "-" if c in ds.minority else ":"
        axes[1].plot(pred[:, c], style, label=str(c) if c in ds.minority else None)
    axes[1].axhline(0.1, color="k", lw=0.8)
    axes[1].set_xlabel("dual step")
    axes[1].set_title("predicted class shares (minorities solid)")
    if ds.minority:
        axes[1].legend()
    fig.suptitle(f"{name}: primal-dual training")
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def run_sample(params: Params, name: str, root: Path, parent_run_id: Optional[str] = None) -> Path:
    from flows.stages import Layout, _up_to_date

    lay = Layout(root)
    out = lay.samples(name)
    fp = fp_sample(params, name, root)
    if _up_to_date(out, fp, "sample", name):
        return out
    device = resolve_device(params.dual.device)
    model, cfg, meta = load_dual(lay.model(name), device)
    with tracking.stage_run("sample", name, parent_run_id) as run:
        with measure(device) as m:
            x = sample_ddpm(model, params.dual.n_samples, seed=params.seed + 1, device=device, cfg=cfg.sampler)
        sampler = meta.get("mode", "dual")
        io.write_samples(out, {sampler: {"x": x.numpy(), "dropped": np.zeros(len(x), bool), "nfe": model.T,
                                         "newton_iters_mean": 0.0, "wall_s": m.wall_s, "peak_mem_mb": m.peak_mem_mb,
                                         "device": str(device)}},
                         {"fingerprint": fp, "dataset": name, "constraint": "kl_classes", "device": str(device),
                          "method": "dual"})
        if run:
            tracking.log_metrics({f"{sampler}.wall_s": m.wall_s})
    log.info("sample[%s/%s]: %d samples in %.2fs", name, sampler, len(x), m.wall_s)
    return out


def run_evaluate(params: Params, name: str, root: Path, parent_run_id: Optional[str] = None) -> list[dict]:
    """Class shares (raw and confusion-corrected, with bootstrap CIs) and the classifier-feature Fréchet distance."""
    from flows.stages import Layout

    lay = Layout(root)
    ds: DigitsDataset = params.dataset(name)
    splits, labels, attrs = load_data(root, name)
    groups, _ = io.read_samples(lay.samples(name))
    clf = fit_classifier(splits["val"], labels["val"], splits["test"], labels["test"], seed=params.seed + 100,
                         epochs=params.dual.classifier_epochs)
    shown = report_classes(ds)
    rows, hists = [], {}
    for sampler, grp in groups.items():
        ev = evaluate_digits(grp["x"], clf, (splits["test"], labels["test"]), splits["train"], minority=shown,
                             seed=params.seed)
        corr = np.asarray(ev["hist_corrected"])
        hists[sampler] = ev
        row = {"dataset": name, "sampler": sampler, "method": "dual", "n_samples": int(len(grp["x"])),
               "metric": "frechet_clf", "score": ev["fd"], "score_floor": ev["fd_floor"],
               "score_reference": float("nan"), "score_target": float("nan"),
               "jsd": float("nan"), "jsd_floor": float("nan"), "jsd_uniform": float("nan"),
               "violation_max": float("nan"), "violation_mean": float("nan"), "infeasible_rate": float("nan"),
               "drop_rate": 0.0, "nonfinite": 0, "nfe": int(grp["nfe"]), "newton_iters": 0.0,
               "wall_s": float(grp["wall_s"]), "peak_mem_mb": float(grp["peak_mem_mb"]), "device": grp["device"],
               "classifier_accuracy": ev["classifier_accuracy"], "kl_uniform": ev["kl_uniform_corrected"],
               "tv_uniform": ev["tv_uniform_corrected"], "low_conf_rate": ev["frac_low_conf"],
               "near_copy_frac": ev["near_copy_frac"], "hist_corrected": ev["hist_corrected"],
               "hist_raw": ev["hist_raw"],
               **{f"share/{c}": float(corr[c]) for c in shown},
               "share_within_tol": bool(np.all(np.abs(corr[ds.minority] - 1 / NUM_CLASSES) <= SHARE_TOL))
               if ds.minority else None}
        rows.append(row)
    plot_evaluation(lay.map_png(name), groups, hists, shown, name)
    io.write_text_atomic(lay.report(name), json.dumps({"dataset": name, "method": "dual", "rows": rows,
                                                       "classifier_confusion": clf.confusion.tolist()}, indent=1))
    with tracking.stage_run("evaluate", name, parent_run_id) as run:
        if run:
            for r in rows:
                tracking.log_metrics({f"{r['sampler']}.{k}": v for k, v in r.items()
                                      if isinstance(v, (int, float)) and not isinstance(v, bool)})
            tracking.log_artifact(lay.map_png(name), "plots")
            tracking.log_artifact(lay.report(name), "reports")
    return rows


def plot_evaluation(path: Path, groups: dict, evs: dict, shown: list[int], name: str) -> None:
    """A grid of generated digits beside the class histogram (raw and confusion-corrected) against uniform."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sampler = next(iter(groups))
    x, ev = groups[sampler]["x"], evs[sampler]
    fig = plt.figure(figsize=(11, 4.2))
    k = 8
    for i in range(min(k * k, len(x))):
        ax = fig.add_axes([0.01 + (i % k) * 0.052, 0.9 - (i // k + 1) * 0.11, 0.05, 0.105])
        ax.imshow(x[i].reshape(8, 8), cmap="gray_r", vmin=-1, vmax=1)
        ax.axis("off")
    ax = fig.add_axes([0.5, 0.14, 0.47, 0.74])
    c = np.arange(NUM_CLASSES)
    ax.bar(c - 0.2, ev["hist_raw"], 0.4, label="raw (classifier)")
    ax.bar(c + 0.2, ev["hist_corrected"], 0.4, label="confusion-corrected")
    ax.axhline(1 / NUM_CLASSES, color="k", lw=0.8, label="uniform")
    for m in shown:
        ax.axvspan(m - 0.45, m + 0.45, color="orange", alpha=0.15)
    ax.set_xticks(c)
    ax.set_xlabel("class (shaded: constrained or excluded)")
    ax.set_ylabel("share of samples")
    ax.set_title(f"{sampler}: FD {ev['fd']:.1f} (floor {ev['fd_floor']:.1f})")
    ax.legend(fontsize=8)
    fig.suptitle(f"{name}: generated digits and class shares")
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
