"""Figures of dual training: λ and the predicted shares per dual step, generated digits and their class shares,
the fine-tuning comparison, and the figures of ``cdcore bench dual`` (drawn from its JSON reports)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cdcore.data.digits import NUM_CLASSES  # noqa: E402
from cdcore.data.io import atomic_path  # noqa: E402


def _save(fig: Any, path: str | Path, dpi: int = 90) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


def training(path: str | Path, hist: Mapping[str, Any], minority: Sequence[int], name: str) -> None:
    """λ per constraint and the class shares the λ-mixture predicts (dual.md §1.5), per dual step."""
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
        style = "-" if c in minority else ":"
        axes[1].plot(pred[:, c], style, label=str(c) if c in minority else None)
    axes[1].axhline(0.1, color="k", lw=0.8)
    axes[1].set_xlabel("dual step")
    axes[1].set_title("predicted class shares (minorities solid)")
    if minority:
        axes[1].legend()
    fig.suptitle(f"{name}: primal-dual training")
    fig.tight_layout()
    _save(fig, path)


def digits_and_shares(path: str | Path, groups: Mapping[str, Mapping[str, Any]], evs: Mapping[str, Mapping[str, Any]],
                      shown: Sequence[int], name: str) -> None:
    """A grid of generated digits beside the class histogram (raw and confusion-corrected) against uniform."""
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
    _save(fig, path)


def finetune_comparison(path: str | Path, report: Mapping[str, Any]) -> None:
    """Class histograms (confusion-corrected) of the teacher and both fine-tuned models, and their FD."""
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
    _save(fig, path)


def _err(ivs: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Error bars (below, above the mean) of t-intervals."""
    return np.array([[iv["mean"] - iv["lo"] for iv in ivs], [iv["hi"] - iv["mean"] for iv in ivs]])


def _share_bars(ax, summary: Mapping[str, Any], names: list[str]) -> np.ndarray:
    """Grouped bars of each variant's corrected class shares (seed mean, t-interval) and the uniform line."""
    width = 0.8 / max(1, len(names))
    xs = np.arange(NUM_CLASSES)
    for i, name in enumerate(names):
        ivs = [summary[name][f"hist_corrected_{c}"] for c in range(NUM_CLASSES)]
        ax.bar(xs - 0.4 + (i + 0.5) * width, [iv["mean"] for iv in ivs], width, yerr=_err(ivs), capsize=2,
               label=f"{name} (n={ivs[0]['n']})")
    ax.axhline(1.0 / NUM_CLASSES, color="k", ls="--", lw=1, label="uniform")
    return xs


def bench_shares(path: str | Path, report: Mapping[str, Any]) -> None:
    """``dual_shares.png`` of ``cdcore bench dual``: corrected class shares per variant (seed mean with its
    interval) and the uniform line, from the ``dual.json`` report."""
    summary, minority = report["summary"], set(report["minority"])
    names = list(summary)
    fig, ax = plt.subplots(figsize=(10, 4))
    xs = _share_bars(ax, summary, names)
    ax.set_xticks(xs, [f"{c}*" if c in minority else str(c) for c in range(NUM_CLASSES)])
    ax.set_xlabel("digit class (* = minority)")
    ax.set_ylabel("corrected share")
    ax.set_title(f"digits ρ={report['settings']['rho']}, scale {report['scale']}: seed mean, 95% t-interval")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    _save(fig, path, dpi=120)


def bench_finetune(path: str | Path, report: Mapping[str, Any]) -> None:
    """``dual_finetune.png`` of ``cdcore bench dual --experiment finetune``, from its report: left, the corrected
    class histogram per variant (seed mean, t-interval); right, the FD per variant with the floor."""
    summary, new_class = report["summary"], report["settings"]["new_class"]
    names = list(summary)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [3, 1]})
    xs = _share_bars(ax, summary, names)
    ax.set_xticks(xs, [f"{c}*" if c == new_class else str(c) for c in range(NUM_CLASSES)])
    ax.set_xlabel("digit class (* = fine-tuning class, absent from pretraining)")
    ax.set_ylabel("corrected share")
    ax.set_yscale("symlog", linthresh=0.05)
    ax.set_title(f"fine-tuning on {new_class}s, scale {report['scale']}: seed mean, 95% t-interval")
    ax.legend(fontsize=8)
    ivs = [summary[n]["fd"] for n in names]
    bx.bar(np.arange(len(names)), [iv["mean"] for iv in ivs], yerr=_err(ivs), capsize=3,
           color=[f"C{i}" for i in range(len(names))])
    floor = summary[names[0]]["fd_floor"]["mean"]
    bx.axhline(floor, color="k", ls="--", lw=1, label=f"floor {floor:.1f}")
    bx.set_xticks(np.arange(len(names)), names, rotation=20)
    bx.set_ylabel("FD to balanced test split")
    bx.set_title("classifier-feature FD", fontsize=10)
    bx.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path, dpi=120)
