"""The evaluate stage's figure of a NAMM data set (images and constraint distances, data against samples), and
the constraint-distance histograms of ``cdcore bench namm``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cdcore.data.io import atomic_path  # noqa: E402


def samples_and_distances(path: str | Path, test: np.ndarray, groups: Mapping[str, Mapping[str, Any]],
                          shape: list[int], d_test: np.ndarray, d_samples: Mapping[str, np.ndarray],
                          name: str) -> None:
    """Held-out images above samples, and the constraint-distance histograms (data vs samples, log x)."""
    H, W, C = shape
    k = 6
    sampler = next(iter(groups))
    rows = [("held-out", test[:k]), (sampler, groups[sampler]["x"][:k])]
    lim = float(np.abs(test[:k]).max()) or 1.0       # one colour scale for data and samples
    fig = plt.figure(figsize=(2 * k, 6.5))
    for r, (label, imgs) in enumerate(rows):
        for i, im in enumerate(imgs):
            ax = fig.add_subplot(3, k, r * k + i + 1)
            a = im.reshape(H, W, C)
            ax.imshow(a[..., 0] if C <= 2 else a, cmap="RdBu_r" if C <= 2 else None, vmin=-lim, vmax=lim)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label)
    ax = fig.add_subplot(3, 1, 3)
    allv = np.concatenate([d_test, *d_samples.values()])
    allv = allv[np.isfinite(allv) & (allv > 0)]
    lo, hi = (allv.min(), allv.max()) if len(allv) else (1e-8, 1.0)
    bins = np.logspace(np.log10(lo), np.log10(max(hi, lo * 10)), 40)
    ax.hist(np.clip(d_test, lo, None), bins=bins, alpha=0.6, label=f"held-out data (mean {d_test.mean():.2g})")
    for s, d in d_samples.items():
        ax.hist(np.clip(d, lo, None), bins=bins, alpha=0.6, label=f"{s} samples (mean {d.mean():.2g})")
    ax.set_xscale("log")
    ax.set_xlabel("constraint distance ℓ_constr")
    ax.legend()
    fig.suptitle(f"{name}: held-out data vs NAMM samples")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def bench_histograms(path: str | Path, dists: Mapping[str, Mapping[str, Sequence[float]]]) -> None:
    """``namm_constraint_hist.png``: per problem, histograms of the normalised constraint distance ℓ̄ (÷ the max
    over both models), NAMM against vanilla. ``dists``: {problem: {"vanilla": ℓ per sample, "namm": ℓ per sample}},
    what ``run_suite`` returns under ``"_figure"``."""
    k = max(1, len(dists))
    fig, axes = plt.subplots(1, k, figsize=(3.2 * k, 2.8), squeeze=False)
    for ax, (problem, dist) in zip(axes[0], dists.items()):
        d = {m: np.asarray(v, dtype=np.float64) for m, v in dist.items()}
        finite = [v[np.isfinite(v)] for v in d.values()]
        top = max((float(v.max()) for v in finite if v.size), default=1.0) or 1.0
        bins = np.linspace(0.0, 1.0, 31)
        ax.hist(d["vanilla"][np.isfinite(d["vanilla"])] / top, bins=bins, alpha=0.6, label="vanilla DM",
                color="tab:gray")
        ax.hist(d["namm"][np.isfinite(d["namm"])] / top, bins=bins, alpha=0.7, label="NAMM + MDM", color="tab:blue")
        ax.set_title(problem.replace("_", " "))
        ax.set_xlabel("normalised constraint distance")
        ax.set_yticks([])
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
