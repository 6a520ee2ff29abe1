"""`cdcore bench dual`: the digits fairness benchmark (dual.md §2.2) over variants × seeds, with intervals.

One seed = one biased split (``load_digits_split(seed)``), one evaluation
classifier trained on that split's balanced real train set, and one training
run of every variant on that split's biased set. Variants share the training
loop (:func:`cdcore.methods.dual.train_dual`):

  unconstrained  λ ≡ 0 on the biased data
  dual           resilient dual training (b̃ = 0, γ = ``resilience``)
  dual-rel       dual training with b̃_i = κ · running objective loss (``kappa``)
  reweight       fixed oracle λ (per-class reweighting to a uniform mixture; needs π)
  conditional    class-conditional model on the biased data, sampled with uniform labels (needs labels)

Each (variant, seed) gives one row; :func:`summarize` gives each variant's mean
and a 95 % Student-t interval over seeds (mean ± t_{0.975, n−1} · s/√n), and
:func:`evaluate_targets` checks the issue's targets on those numbers: each
minority class's corrected share within 0.03 of 0.10 for ``dual``, and the
Fréchet distance of ``dual`` below ``unconstrained`` (paired by seed).

Public API::

    SCALES, VARIANTS, DualScale
    variant_cfg(name, scale, fixed_lambdas) -> DualCfg          (cdcore.config.dual; reweight: oracle_lambdas)
    run_variant(name, split, clf, scale, seed, device) -> dict        (the evaluation dict of one run)
    run_dual_bench(scale, device, ...) -> report        (the content of reports/bench/dual.json; writes nothing)
    format_dual_report(report) -> str                                 (Markdown)
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, replace
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from cdcore.data.digits import NUM_CLASSES, DigitsCfg, DigitsSplit, load_digits_split
from cdcore.methods.dual.evaluate import EvalClassifier, evaluate_digits, fit_classifier
from cdcore.methods.dual import (
    oracle_lambdas,
    DualData,
    predicted_shares,
    sample_ddpm,
    train_dual,
    uniform_labels,
)
from cdcore.profiling import measure
from cdcore.config.dual import DualScale, SCALES, VARIANTS, variant_cfg
from cdcore.metrics import t_interval
from cdcore.report.tables import fmt_interval

BENCHMARK = "digits_fair"
TARGET_SHARE, TARGET_TOL = 0.10, 0.03
INTERVAL = ("95% Student-t interval over seeds: mean ± t(0.975, n-1)·s/√n, clipped at 0 for the non-negative "
            "metrics (none for n = 1)")
ROW_KEYS = ("benchmark", "model", "seed", "device", "rho", "steps", "minority_share_corrected", "minority_share_raw",
            "kl_uniform", "tv_uniform", "fd", "fd_floor", "low_conf_rate", "lambda_final", "predicted_shares",
            "wall_s", "peak_mem_mb")


def fit_split_classifier(split: DigitsSplit, scale: DualScale, seed: int) -> EvalClassifier:
    """The evaluation classifier of one split: balanced real train digits only, measured on the test split."""
    return fit_classifier(split.x_train, split.y_train, split.x_test, split.y_test, seed=seed + 100,
                          epochs=scale.clf_epochs)


def run_variant(name: str, split: DigitsSplit, clf: EvalClassifier, scale: DualScale, seed: int,
                device: torch.device | str = "cpu") -> dict:
    """Train one variant on the split's biased set, sample, evaluate; the evaluation dict plus run facts."""
    device = torch.device(device)
    minority = list(split.minority)
    cfg = variant_cfg(name, scale, oracle_lambdas(split.class_shares, minority) if name == "reweight" else None)
    data = DualData.from_labelled(split.x_biased, split.y_biased, minority, num_classes=NUM_CLASSES)
    labels = uniform_labels(scale.n_samples, NUM_CLASSES, seed=seed) if name == "conditional" else None
    with measure(device) as m:
        t0 = time.perf_counter()
        outc = train_dual(data, cfg, seed=seed, device=device)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        x = sample_ddpm(outc.model, scale.n_samples, seed=seed + 1, device=device, labels=labels, cfg=cfg.sampler)
        t_sample = time.perf_counter() - t0
    ev = evaluate_digits(x, clf, (split.x_test, split.y_test), split.x_biased, minority=minority, seed=seed,
                         n_boot=scale.n_boot, fd_repeats=scale.fd_repeats)
    tail = max(1, len(outc.lambdas) // 5)
    lam = outc.lambdas[-tail:].mean(0)                    # the model averages over recent λ (EMA weights)
    if name == "conditional":                             # sampled with uniform labels, not a λ-mixture
        pred = np.bincount(labels.numpy(), minlength=NUM_CLASSES) / len(labels)
    else:
        pred = predicted_shares(split.class_shares, minority, lam)
    ev.update({"variant": name, "seed": seed, "rho": split.rho, "steps": scale.steps, "device": str(device),
               "lambda_final": outc.lambdas[-1].tolist(), "lambda_tail_mean": lam.tolist(),
               "predicted_shares": pred.tolist(), "minority_share_predicted": float(pred[minority].sum()),
               "train_s": t_train, "sample_s": t_sample, "wall_s": m.wall_s, "peak_mem_mb": m.peak_mem_mb,
               "n_params": sum(p.numel() for p in outc.model.parameters())})
    return ev


def bench_row(ev: dict, minority: Sequence[int]) -> dict:
    """The documented row of one (variant, seed), plus the full histograms and bootstrap CIs of one run."""
    corr, raw = ev["hist_corrected"], ev["hist_raw"]
    return {
        "benchmark": BENCHMARK, "model": ev["variant"], "seed": ev["seed"], "device": ev["device"], "rho": ev["rho"],
        "steps": ev["steps"],
        "minority_share_corrected": {str(c): float(corr[c]) for c in minority},
        "minority_share_raw": {str(c): float(raw[c]) for c in minority},
        "kl_uniform": ev["kl_uniform_corrected"], "tv_uniform": ev["tv_uniform_corrected"],
        "fd": ev["fd"], "fd_floor": ev["fd_floor"], "low_conf_rate": ev["frac_low_conf"],
        "lambda_final": ev["lambda_final"], "predicted_shares": ev["predicted_shares"],
        "wall_s": ev["wall_s"], "peak_mem_mb": ev["peak_mem_mb"],
        # beyond the documented keys: what a reader needs to judge the row
        "minority_share_corrected_total": ev["minority_share_corrected"],
        "minority_share_corrected_total_ci": ev["minority_share_corrected_ci"],
        "minority_share_raw_total": ev["minority_share_raw"],
        "kl_uniform_ci": ev["kl_uniform_corrected_ci"], "kl_uniform_raw": ev["kl_uniform_raw"],
        "hist_corrected": corr, "hist_raw": raw, "classifier_accuracy": ev["classifier_accuracy"],
        "near_copy_frac": ev["near_copy_frac"], "near_copy_frac_minority": ev["near_copy_frac_minority"],
        "lambda_tail_mean": ev["lambda_tail_mean"], "train_s": ev["train_s"], "sample_s": ev["sample_s"],
        "n_samples": ev["n_samples"], "n_params": ev["n_params"],
    }


# ----- summary over seeds ---------------------------------------------------------


def _metric_values(rows: list[dict], minority: Sequence[int]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in rows:
        vals = {f"share_corrected_{c}": r["minority_share_corrected"][str(c)] for c in minority}
        vals.update({f"share_raw_{c}": r["minority_share_raw"][str(c)] for c in minority})
        vals.update({f"share_predicted_{c}": r["predicted_shares"][c] for c in minority})
        vals.update({"minority_share_corrected_total": r["minority_share_corrected_total"],
                     "kl_uniform": r["kl_uniform"], "tv_uniform": r["tv_uniform"], "fd": r["fd"],
                     "fd_floor": r["fd_floor"], "low_conf_rate": r["low_conf_rate"], "wall_s": r["wall_s"],
                     "peak_mem_mb": r["peak_mem_mb"]})
        vals.update({f"hist_corrected_{c}": r["hist_corrected"][c] for c in range(NUM_CLASSES)})
        for k, v in vals.items():
            out.setdefault(k, []).append(float(v))
    return out


def summarize(rows: list[dict], minority: Sequence[int]) -> dict[str, dict]:
    """Per variant: {metric: t_interval over seeds} and the seeds used."""
    out: dict[str, dict] = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == name]
        out[name] = {"seeds": [r["seed"] for r in rs],
                     **{k: t_interval(v, lower=0.0) for k, v in _metric_values(rs, minority).items()}}
    return out


def evaluate_targets(rows: list[dict], summary: dict, minority: Sequence[int]) -> dict:
    """The issue's targets, checked on the seed means and, more strictly, on the whole interval."""
    targets: dict = {}
    if "dual" in summary:
        s = summary["dual"]
        per = {}
        for c in minority:
            iv = s[f"share_corrected_{c}"]
            per[str(c)] = {**iv, "mean_within": abs(iv["mean"] - TARGET_SHARE) <= TARGET_TOL,
                           "interval_within": (iv["lo"] >= TARGET_SHARE - TARGET_TOL
                                               and iv["hi"] <= TARGET_SHARE + TARGET_TOL)}
        targets["dual_minority_share"] = {
            "target": f"each minority class's corrected share within {TARGET_TOL} of {TARGET_SHARE}",
            "per_class": per, "met": all(p["mean_within"] for p in per.values()),
            "predicted_by_lambda": {str(c): s[f"share_predicted_{c}"]["mean"] for c in minority
                                    if f"share_predicted_{c}" in s},
            "met_by_whole_interval": all(p["interval_within"] for p in per.values())}
    if "dual" in summary and "unconstrained" in summary:
        fd_u = {r["seed"]: r["fd"] for r in rows if r["model"] == "unconstrained"}
        diffs = [r["fd"] - fd_u[r["seed"]] for r in rows if r["model"] == "dual" and r["seed"] in fd_u]
        d = t_interval(diffs)
        targets["dual_fd_below_unconstrained"] = {
            "target": "FD of dual lower than FD of unconstrained",
            "fd_dual": summary["dual"]["fd"], "fd_unconstrained": summary["unconstrained"]["fd"],
            "paired_difference_dual_minus_unconstrained": d,
            "met": summary["dual"]["fd"]["mean"] < summary["unconstrained"]["fd"]["mean"],
            "met_by_whole_interval": d["n"] > 1 and d["hi"] < 0}
    return targets


# ----- the harness ----------------------------------------------------------------
Log = Callable[[str], None]


def run_dual_bench(scale: str | DualScale, device: torch.device | str,
                   variants: Optional[Sequence[str]] = None, seeds: Optional[Sequence[int]] = None,
                   on_row: Optional[Callable[[dict], None]] = None, log: Log = print,
                   threads: Optional[int] = None) -> dict:
    """Every variant × seed at one scale; returns the report, writes nothing (``flows.bench.run_dual`` writes it
    as ``reports/bench/dual.json`` and draws :func:`cdcore.report.dual.bench_shares` from it).

    ``on_row(row)`` is called after each (variant, seed). ``threads`` sets torch's intra-op threads for the run
    (None: leave them; on a CPU, 1 is usually fastest: the networks are small, and extra threads only contend).
    """
    if threads:
        torch.set_num_threads(int(threads))
    scale_name = scale if isinstance(scale, str) else "custom"
    if isinstance(scale, str):
        if scale not in SCALES:
            raise KeyError(f"unknown scale {scale!r}; available: {', '.join(SCALES)}")
        sc = SCALES[scale]
    else:
        sc = scale
    if variants:
        bad = [v for v in variants if v not in VARIANTS]
        if bad:
            raise KeyError(f"unknown variant {bad[0]!r}; available: {', '.join(VARIANTS)}")
        sc = replace(sc, variants=tuple(variants))
    if seeds:
        sc = replace(sc, seeds=tuple(int(s) for s in seeds))
    device = torch.device(device)
    t_all = time.perf_counter()
    rows, classifiers, minority = [], [], None
    for seed in sc.seeds:
        split = load_digits_split(DigitsCfg(rho=sc.rho, seed=seed))
        minority = list(split.minority)
        t0 = time.perf_counter()
        clf = fit_split_classifier(split, sc, seed)
        classifiers.append({"seed": seed, "accuracy": clf.accuracy, "fit_s": time.perf_counter() - t0})
        log(f"[dual] seed {seed}: classifier held-out accuracy {clf.accuracy:.3f}; biased set {len(split.y_biased)} "
            f"images, minority counts {[int((split.y_biased == c).sum()) for c in minority]}")
        for name in sc.variants:
            row = bench_row(run_variant(name, split, clf, sc, seed, device), minority)
            rows.append(row)
            if on_row:
                on_row(row)
            sh = ", ".join(f"{c}: {v:.3f}" for c, v in row["minority_share_corrected"].items())
            log(f"  {name:<13s} seed {seed}: corrected shares {sh}  KL_U {row['kl_uniform']:.3f}  "
                f"FD {row['fd']:.1f} (floor {row['fd_floor']:.1f})  {row['wall_s']:.1f}s")
    minority = minority or []
    summary = summarize(rows, minority)
    return {
        "benchmark": BENCHMARK, "scale": scale_name, "device": str(device), "torch": torch.__version__,
        "host": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(sc).items()},
        "minority": minority, "interval": INTERVAL, "classifiers": classifiers,
        "rows": rows, "summary": summary, "targets": evaluate_targets(rows, summary, minority),
        "total_s": time.perf_counter() - t_all,
    }


def format_dual_report(report: dict) -> str:
    """Markdown: the per-variant summary (mean [95% t-interval] over seeds), then the targets."""
    minority = report["minority"]
    cols = ["model", "seeds"] + [f"share {c} (corr)" for c in minority] + ["KL(p‖U)", "TV", "FD", "FD floor",
                                                                          "low conf", "wall s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, s in report["summary"].items():
        cells = [name, str(len(s["seeds"]))] + [fmt_interval(s[f"share_corrected_{c}"]) for c in minority]
        cells += [fmt_interval(s["kl_uniform"]), fmt_interval(s["tv_uniform"]), fmt_interval(s["fd"], "{:.1f}"), fmt_interval(s["fd_floor"], "{:.1f}"),
                  fmt_interval(s["low_conf_rate"]), fmt_interval(s["wall_s"], "{:.1f}")]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Intervals: {report['interval']}. Shares are confusion-corrected (BBSE); target 0.10 each.")
    t = report["targets"]
    if "dual_minority_share" in t:
        d = t["dual_minority_share"]
        per = ", ".join(f"{c}: {p['mean']:.3f}" for c, p in d["per_class"].items())
        pred = ", ".join(f"{c}: {v:.3f}" for c, v in d.get("predicted_by_lambda", {}).items())
        lines.append(f"- target dual minority shares within {TARGET_TOL} of {TARGET_SHARE} ({per}): "
                     f"{'MET' if d['met'] else 'NOT MET'} on the seed mean; "
                     f"{'met' if d['met_by_whole_interval'] else 'not met'} by the whole interval"
                     + (f" (the final λ-mixture predicts {pred})" if pred else ""))
    if "dual_fd_below_unconstrained" in t:
        f = t["dual_fd_below_unconstrained"]
        d = f["paired_difference_dual_minus_unconstrained"]
        lines.append(f"- target FD(dual) < FD(unconstrained) ({f['fd_dual']['mean']:.1f} vs "
                     f"{f['fd_unconstrained']['mean']:.1f}; paired difference {fmt_interval(d, '{:+.1f}')}): "
                     f"{'MET' if f['met'] else 'NOT MET'} on the seed mean; "
                     f"{'met' if f['met_by_whole_interval'] else 'not met'} by the whole interval")
    return "\n".join(lines)


__all__ = ["ROW_KEYS", "fit_split_classifier", "run_variant",
           "bench_row", "summarize", "evaluate_targets", "t_interval", "run_dual_bench", "format_dual_report"]
