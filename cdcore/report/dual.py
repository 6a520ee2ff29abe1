"""Figures of dual training: λ and the predicted shares per dual step, generated digits and their class shares,
and the fine-tuning comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cdcore.data.digits import NUM_CLASSES  # noqa: E402
from cdcore.data.io import atomic_path  # noqa: E402


def _save(fig: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
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
