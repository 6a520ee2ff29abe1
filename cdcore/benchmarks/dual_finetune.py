"""Fine-tuning with a pretrained-model constraint (dual.md §1.4, §2.2 item 7; the paper's Fig. 4).

Pretrain an unconstrained DDPM on the balanced digits train split *without* class 9
(:func:`pretrain_teacher`), then fine-tune it on the training 9s alone, two ways
(:func:`finetune_variants`), with the same steps, learning rate and objective draws:

  unconstrained  plain fine-tuning from the teacher on the 9s (λ ≡ 0; the distillation loss is only logged)
  constrained    dual training: objective = the 9s, one constraint KL(p_pre‖p_θ) ≤ b through the
                 distillation loss E‖ε̂_pre(x_t,t) − ε̂_θ(x_t,t)‖²/d on forward-noised samples of the
                 frozen teacher (``source="samples"``, the faithful variant of §1.4)

Theorem 1 says the constrained model approximates the mixture (q_9 + λ p_pre)/(1 + λ), so its
predicted share of 9s is 1/(1 + λ); that prediction is logged beside the classifier's measurement.

**Threshold.** The loss threshold b̃ is an affine image of a KL budget with unknown constants
(dual.md §1.2), so it cannot be set from a target KL, nor from the share of 9s one would like
(that would be choosing λ by hand). It is instead calibrated per teacher as the *drift floor*: the
distillation loss that the same fine-tuning (same config, steps, learning rate, seed and
constraint draws) reaches when its objective is the teacher's own training data, where there is
nothing new to learn. The constraint then reads "on the teacher's distribution, the fine-tuned
model may differ from the teacher by no more than continued training on its old data would make
it differ"; b̃ is measured, never tuned on an evaluation number. It is the mean over the last
``drift_tail`` of that run's dual blocks, the statistic the dual step compares with b̃. Two
floors that look natural were rejected for stated reasons: an independently retrained teacher
(two pretraining seeds differ by ~0.03 in this loss, ~8× the continued-training drift and as much
as a fine-tune whose samples are 90 % 9s, since fine-tuning from the teacher keeps the network
near it: that floor would allow almost anything), and fine-tuning on the teacher's *samples*
(they are not its data: ~7 % are unrecognisable and their FD to the test split is ~15× the
floor, so that run learns something new and drifts ~3× more; it is kept as the fallback when no
data is passed). At ci scale b̃ ≈ 0.0034 settles λ ≈ 3.5, i.e. ~22 % 9s; a class-balanced result
would need λ = 9, which no threshold here is derived from. The dual step is taken on the normalised
constraint L/b̃ − 1 ≤ 0, i.e. the raw dual step size is ``eta / b̃`` (unit-free, so one ``eta``
serves every scale).

Evaluation (:func:`evaluate_finetune`) uses :func:`cdcore.methods.dual.evaluate.evaluate_digits` with "minority"
= (9,): confusion-corrected (BBSE) shares of 0–8 and of 9, KL/TV of the corrected histogram to
uniform, and the Fréchet distance in the evaluation classifier's features to the balanced test
split next to its floor (real train vs test at the same N).

Public API::

    FT_SCALES, FinetuneScale
    pretrain_teacher(split, scale, seed, device, exclude=(9,)) -> Denoiser
    finetune_variants(teacher, x_new, scale, seed, device, on_progress=None) -> {"constrained", "unconstrained"}
    drift_threshold(teacher, x_ref, teacher_x0, scale, seed, device) -> float
    distillation_loss(model, teacher, x0, seed) -> float
    evaluate_finetune(model, clf, split, n, seed, device) -> dict      (samples n, then evaluate_finetune_samples)
    run_finetune_bench(scale, device, seeds=(0, 1, 2), log=print) -> report
                                           (the content of reports/bench/dual_finetune.json; writes nothing)
    format_finetune_report(report) -> str                                                    (Markdown)
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

import torch

from cdcore.data.digits import NUM_CLASSES, DigitsCfg, load_digits_split
from cdcore.benchmarks.dual import fit_split_classifier
from cdcore.config.dual import DualScale
from cdcore.methods.dual import DualOutcome
from cdcore.profiling import measure
from cdcore.config.dual import FT_SCALES, FinetuneScale
from cdcore.methods.dual.finetune import NEW_CLASS, distillation_loss, drift_threshold, evaluate_finetune, evaluate_finetune_samples, finetune_variants, pretrain_teacher, resolve_scales, tail_mean, teacher_samples
from cdcore.metrics import t_interval
from cdcore.report.tables import fmt_interval

BENCHMARK = "digits_finetune"
VARIANTS = ("teacher", "unconstrained", "constrained")
PAPER_FID = {"unconstrained": 45.9, "constrained": 25.2}     # MNIST, Fig. 4 (FID; not comparable in scale)
INTERVAL = ("95% Student-t interval over seeds: mean ± t(0.975, n-1)·s/√n, clipped at 0 for the non-negative "
            "metrics (none for n = 1); paired differences are over seeds, unclipped")


# ----- pretraining and fine-tuning ----------------------------------------------------


# ----- evaluation ---------------------------------------------------------------------


# ----- the harness ----------------------------------------------------------------------
Log = Callable[[str], None]
METRICS = ("share_old", "share_new", "kl_uniform", "tv_uniform", "fd", "fd_floor", "low_conf_rate",
           "distill_loss", "lambda_tail_mean", "predicted_share_new", "wall_s")


def _row(seed: int, variant: str, ev: dict, device: torch.device, extra: dict) -> dict:
    row = {"benchmark": BENCHMARK, "seed": seed, "variant": variant, "device": str(device)}
    row.update({k: v for k, v in ev.items() if k != "detail"})
    row.update(extra)
    return row


def _outcome_facts(out: DualOutcome, tail: float) -> dict:
    lam = out.lambdas[1:, 0] if len(out.lambdas) > 1 else out.lambdas[:, 0]
    lam_tail = tail_mean(lam, tail)
    return {"lambda_final": float(out.lambdas[-1, 0]), "lambda_tail_mean": lam_tail,
            "predicted_share_new": 1.0 / (1.0 + lam_tail),      # the λ-mixture (q_9 + λ p_pre)/(1 + λ)
            "threshold": float(out.thresholds[0, 0]) if out.thresholds.size else float("nan"),
            "distill_loss_train_tail": tail_mean(out.constraint_losses[:, 0], tail),
            "objective_tail": tail_mean(out.objective, tail), "train_s": out.wall_s,
            "lambda_history": out.lambdas[:, 0].tolist(), "distill_history": out.constraint_losses[:, 0].tolist()}


def summarize_finetune(rows: list[dict]) -> dict[str, dict]:
    """Per variant: {metric: t_interval over seeds} (clipped at 0) and the seeds; plus each class's share."""
    out: dict[str, dict] = {}
    for name in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == name]
        s: dict = {"seeds": [r["seed"] for r in rs]}
        for k in METRICS:
            if all(k in r for r in rs):
                s[k] = t_interval([float(r[k]) for r in rs], lower=0.0)
        for c in range(NUM_CLASSES):
            s[f"hist_corrected_{c}"] = t_interval([r["hist_corrected"][c] for r in rs], lower=0.0)
        out[name] = s
    return out


def _paired(rows: list[dict], key: str, a: str, b: str) -> tuple[dict, list[float]]:
    """t-interval of key(a) − key(b) over the seeds both have."""
    vb = {r["seed"]: r[key] for r in rows if r["variant"] == b}
    diffs = [float(r[key] - vb[r["seed"]]) for r in rows if r["variant"] == a and r["seed"] in vb]
    return t_interval(diffs), diffs


def evaluate_finetune_targets(rows: list[dict], summary: dict) -> dict:
    """Issue #5: (a) constrained keeps more of 0–8 than unconstrained, (b) lower FD; paired over seeds."""
    if not {"constrained", "unconstrained"} <= set(summary):
        return {}
    d_old, v_old = _paired(rows, "share_old", "constrained", "unconstrained")
    d_fd, v_fd = _paired(rows, "fd", "constrained", "unconstrained")
    c, u = summary["constrained"], summary["unconstrained"]
    return {
        "constrained_keeps_old_classes": {
            "target": "share of digits 0-8 (corrected) higher for constrained than unconstrained fine-tuning",
            "share_old_constrained": c["share_old"], "share_old_unconstrained": u["share_old"],
            "paired_difference_constrained_minus_unconstrained": d_old, "per_seed": v_old,
            "met": d_old["n"] > 0 and d_old["mean"] > 0, "met_by_whole_interval": d_old["n"] > 1 and d_old["lo"] > 0},
        "constrained_fd_below_unconstrained": {
            "target": "FD to the balanced test split lower for constrained than unconstrained fine-tuning",
            "fd_constrained": c["fd"], "fd_unconstrained": u["fd"], "fd_floor": c["fd_floor"],
            "paired_difference_constrained_minus_unconstrained": d_fd, "per_seed": v_fd,
            "met": d_fd["n"] > 0 and d_fd["mean"] < 0, "met_by_whole_interval": d_fd["n"] > 1 and d_fd["hi"] < 0,
            "paper_fid": PAPER_FID},
    }


def run_finetune_bench(scale: str | DualScale, device: torch.device | str = "cpu",
                       seeds: Sequence[int] | None = (0, 1, 2), log: Log = print,
                       threads: int | None = None) -> dict:
    """Per seed: split, evaluation classifier, teacher (no 9s), both fine-tunes on the training 9s, evaluation.

    Returns the report and writes nothing (``flows.bench.run_dual_finetune`` writes it as
    ``reports/bench/dual_finetune.json`` and draws :func:`cdcore.report.dual.bench_finetune` from it).
    ``seeds=None`` takes the scale's seeds; ``threads`` sets torch's intra-op threads (None: leave them).
    """
    if threads:
        torch.set_num_threads(int(threads))
    name, sc, ft = resolve_scales(scale)
    seeds = tuple(int(s) for s in (sc.seeds if seeds is None else seeds))
    if not seeds:
        raise ValueError("no seeds")
    device = torch.device(device)
    t_all = time.perf_counter()
    rows, classifiers = [], []
    for seed in seeds:
        split = load_digits_split(DigitsCfg(seed=seed))
        t0 = time.perf_counter()
        clf = fit_split_classifier(split, sc, seed)
        classifiers.append({"seed": seed, "accuracy": clf.accuracy, "fit_s": time.perf_counter() - t0})
        x_new = split.x_train[split.y_train == NEW_CLASS]
        with measure(device) as m:
            teacher = pretrain_teacher(split, sc, seed, device)
        t_pre = m.wall_s
        x0 = teacher_samples(teacher, sc, seed, device)
        t0 = time.perf_counter()
        x_old = split.x_train[split.y_train != NEW_CLASS]            # the teacher's own training data
        b = drift_threshold(teacher, x_old, x0, sc, seed, device)
        t_drift = time.perf_counter() - t0
        log(f"[finetune] seed {seed}: classifier accuracy {clf.accuracy:.3f}; teacher on "
            f"{int((split.y_train != NEW_CLASS).sum())} digits ({t_pre:.1f}s); {len(x_new)} new 9s; "
            f"drift threshold b = {b:.4g} ({t_drift:.1f}s)")
        outs = finetune_variants(teacher, x_new, sc, seed, device, teacher_x0=x0, threshold=b)
        models = {"teacher": (teacher, None), **{k: (o.model, o) for k, o in outs.items()}}
        for variant in VARIANTS:
            model, out = models[variant]
            t0 = time.perf_counter()
            ev = evaluate_finetune(model, clf, split, sc.n_samples, seed, device, n_boot=sc.n_boot,
                                   fd_repeats=sc.fd_repeats)
            extra = {"steps": sc.steps if out is None else ft.steps, "eval_s": time.perf_counter() - t0,
                     "distill_loss": 0.0 if out is None else distillation_loss(model, teacher, x0, seed),
                     "drift_threshold": b}
            if out is None:
                extra.update({"lambda_final": 0.0, "lambda_tail_mean": 0.0, "predicted_share_new": 0.0,
                              "train_s": t_pre, "wall_s": t_pre})
            else:
                extra.update(_outcome_facts(out, ft.drift_tail))
                extra["wall_s"] = out.wall_s
            row = _row(seed, variant, ev, device, extra)
            rows.append(row)
            log(f"  {variant:<13s} seed {seed}: share 0-8 {row['share_old']:.3f}  share 9 {row['share_new']:.3f} "
                f"(λ predicts {row['predicted_share_new']:.3f})  FD {row['fd']:.1f} (floor {row['fd_floor']:.1f})  "
                f"distill {row['distill_loss']:.4f}  λ {row['lambda_tail_mean']:.2f}  {row['wall_s']:.1f}s")
    summary = summarize_finetune(rows)
    return {
        "benchmark": BENCHMARK, "scale": name, "device": str(device), "torch": torch.__version__,
        "host": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "settings": {"pretrain": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(sc).items()},
                     "finetune": asdict(ft), "new_class": NEW_CLASS, "seeds": list(seeds),
                     "threshold": "drift floor: distillation loss of the same fine-tuning on the teacher's own "
                                  "training data (digits 0-8)"},
        "interval": INTERVAL, "classifiers": classifiers, "rows": rows, "summary": summary,
        "targets": evaluate_finetune_targets(rows, summary), "total_s": time.perf_counter() - t_all,
    }


def format_finetune_report(report: dict) -> str:
    """Markdown: the per-variant summary (mean [95% t-interval] over seeds), then the targets."""
    cols = ["variant", "seeds", "share 0-8", "share 9", "λ-predicted share 9", "KL(p‖U)", "TV", "FD", "FD floor",
            "distill loss", "λ", "low conf", "wall s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, s in report["summary"].items():
        cells = [name, str(len(s["seeds"])), fmt_interval(s["share_old"]), fmt_interval(s["share_new"]), fmt_interval(s["predicted_share_new"]),
                 fmt_interval(s["kl_uniform"]), fmt_interval(s["tv_uniform"]), fmt_interval(s["fd"], "{:.1f}"), fmt_interval(s["fd_floor"], "{:.1f}"),
                 fmt_interval(s["distill_loss"], "{:.4f}"), fmt_interval(s["lambda_tail_mean"], "{:.2f}"), fmt_interval(s["low_conf_rate"]),
                 fmt_interval(s["wall_s"], "{:.1f}")]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Intervals: {report['interval']}. Shares are confusion-corrected (BBSE); a balanced model has "
                 f"0.9 / 0.1. Threshold: {report['settings']['threshold']}.")
    t = report.get("targets", {})
    if "constrained_keeps_old_classes" in t:
        d = t["constrained_keeps_old_classes"]
        lines.append(f"- target share 0-8 constrained > unconstrained ({d['share_old_constrained']['mean']:.3f} vs "
                     f"{d['share_old_unconstrained']['mean']:.3f}; paired difference "
                     f"{fmt_interval(d['paired_difference_constrained_minus_unconstrained'], '{:+.3f}')}): "
                     f"{'MET' if d['met'] else 'NOT MET'} on the seed mean; "
                     f"{'met' if d['met_by_whole_interval'] else 'not met'} by the whole interval")
    if "constrained_fd_below_unconstrained" in t:
        f = t["constrained_fd_below_unconstrained"]
        lines.append(f"- target FD constrained < unconstrained ({f['fd_constrained']['mean']:.1f} vs "
                     f"{f['fd_unconstrained']['mean']:.1f}; paired difference "
                     f"{fmt_interval(f['paired_difference_constrained_minus_unconstrained'], '{:+.1f}')}; paper FID "
                     f"{PAPER_FID['unconstrained']} -> {PAPER_FID['constrained']}): "
                     f"{'MET' if f['met'] else 'NOT MET'} on the seed mean; "
                     f"{'met' if f['met_by_whole_interval'] else 'not met'} by the whole interval")
    return "\n".join(lines)


__all__ = [
    "FT_SCALES",
    "VARIANTS",
    "FinetuneScale",
    "distillation_loss",
    "drift_threshold",
    "evaluate_finetune",
    "evaluate_finetune_samples",
    "evaluate_finetune_targets",
    "finetune_variants",
    "format_finetune_report",
    "pretrain_teacher",
    "run_finetune_bench",
    "summarize_finetune",
    "teacher_samples",
]
