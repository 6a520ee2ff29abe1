"""Pictures a person would rather look at than a table."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cdcore.data.earth import xyz_to_latlon  # noqa: E402
from cdcore.data.io import atomic_path  # noqa: E402


def sphere_map(path: str | Path, data: np.ndarray, samples: Mapping[str, np.ndarray], title: str,
               scores: Mapping[str, float] | None = None, max_points: int = 4000) -> None:
    """Mollweide maps of held-out data beside each sampler's output (longitude, latitude)."""
    panels = [("test data", data)] + list(samples.items())
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.4),
                             subplot_kw={"projection": "mollweide"})
    axes = np.atleast_1d(axes)
    rng = np.random.default_rng(0)
    for ax, (name, pts) in zip(axes, panels):
        if len(pts) > max_points:
            pts = pts[rng.choice(len(pts), max_points, replace=False)]
        ll = np.deg2rad(xyz_to_latlon(pts))
        ax.scatter(ll[:, 1], ll[:, 0], s=1.5, alpha=0.5, color="C0" if name == "test data" else "C3", rasterized=True)
        label = name if not scores or name not in scores else f"{name}  (JSD {scores[name]:.3f})"
        ax.set_title(label, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.set_xticklabels([])
        ax.set_yticklabels([])
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def loss_curve(path: str | Path, history: list[dict], title: str, ylabel: str = "path NLL") -> None:
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(steps, [h["loss"] for h in history], label="train (minibatch)")
    val = [(h["step"], h["val_loss"]) for h in history if "val_loss" in h]
    if val:
        ax.plot(*zip(*val), "o-", label="validation (exact path NLL)")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def scatter_pca(path: str | Path, data: np.ndarray, samples: Mapping[str, np.ndarray], title: str,
                scores: Mapping[str, float] | None = None, max_points: int = 3000) -> None:
    """Points in the first two principal components of the data, for sets of any dimension."""
    mu = data.mean(0)
    _, _, vt = np.linalg.svd(data - mu, full_matrices=False)
    proj = lambda a: (a - mu) @ vt[: min(2, len(vt))].T  # noqa: E731
    panels = [("test data", data)] + list(samples.items())
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), sharex=True, sharey=True)
    axes = np.atleast_1d(axes)
    rng = np.random.default_rng(0)
    for ax, (name, pts) in zip(axes, panels):
        if len(pts) > max_points:
            pts = pts[rng.choice(len(pts), max_points, replace=False)]
        p = proj(pts) if len(pts) else np.zeros((0, 2))
        ax.scatter(p[:, 0], p[:, 1] if p.shape[1] > 1 else np.zeros(len(p)), s=2, alpha=0.5,
                   color="C0" if name == "test data" else "C3", rasterized=True)
        ax.set_title(name if not scores or name not in scores else f"{name}  ({scores[name]:.3f})", fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


_SAMPLER_COLOURS = {"OLLA": "C3", "ULLA": "C1", "OLLA-P": "C0", "ULLA-P": "C9", "ambient+proj": "C7", "reflected": "C2"}


def landing_bench_overview(path: str | Path, rows: list[dict], ratios: Mapping[str, Mapping]) -> None:
    """Quality and wall time of every sampler relative to OLLA, per benchmark, and what ULLA's prior costs.

    Ratios to OLLA put JSD and MMD benchmarks on one axis; samplers that dropped trajectories carry their drop
    rate above the bar, since a dropped sample is not counted in the quality.
    """
    names = list(dict.fromkeys(r["benchmark"] for r in rows))
    samplers = [s for s in _SAMPLER_COLOURS if any(r["sampler"] == s for r in rows)]
    by = {(r["benchmark"], r["sampler"]): r for r in rows}
    fig, axes = plt.subplots(3, 1, figsize=(max(8.0, 1.1 * len(names) + 2), 10.5), sharex=True)
    width = 0.8 / max(len(samplers), 1)
    x = np.arange(len(names))
    for key, ax, label in (("quality", axes[0], "quality / OLLA's (JSD or MMD; lower is better)"),
                           ("wall_s", axes[1], "wall time / OLLA's (log)")):
        for j, s in enumerate(samplers):
            vals, drops = [], []
            for n in names:
                r, ref = by.get((n, s)), by.get((n, "OLLA"))
                ok = r is not None and ref is not None and ref[key] and np.isfinite(float(r[key]))
                vals.append(float(r[key]) / float(ref[key]) if ok else np.nan)
                drops.append(float(r["drop_rate"]) if r is not None else 0.0)
            pos = x - 0.4 + (j + 0.5) * width
            ax.bar(pos, vals, width, color=_SAMPLER_COLOURS[s], label=s)
            if key == "quality":
                for p, v, d in zip(pos, vals, drops):
                    if d > 0 and np.isfinite(v):
                        ax.text(p, v, f"{d:.1%}", ha="center", va="bottom", fontsize=6, rotation=90, color="C3")
        if key == "quality":
            ax.set_ylim(0, ax.get_ylim()[1] * 1.12)  # room for the drop-rate labels
        ax.axhline(1.0, color="k", lw=0.6)
        ax.set_ylabel(label, fontsize=9)
    axes[1].set_yscale("log")
    axes[0].legend(ncol=len(samplers), fontsize=8, loc="upper left")
    axes[0].set_title("every sampler on the same work (red figures: dropped trajectories)", fontsize=10)
    ax = axes[2]
    for j, (start, colour) in enumerate((("prior", "C1"), ("forward_end", "C5"))):
        vals = [float(ratios.get(n, {}).get(f"ulla_minus_olla_from_{start}_mean", np.nan)) for n in names]
        ax.bar(x - 0.2 + 0.4 * j, vals, 0.4, color=colour,
               label=f"started from the {'analytic prior' if start == 'prior' else 'forward chain terminal law'}")
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_ylabel("ULLA − OLLA quality\n(mean of 3 seeds)", fontsize=9)
    # how unmixed the underdamped forward ends: its MMD² to the analytic prior over that of two prior draws
    lo, top = ax.get_ylim()
    top = lo + 1.3 * (top - lo)  # a band above the bars for the labels
    ax.set_ylim(lo, top)
    for xi, n in zip(x, names):
        q = ratios.get(n, {})
        ud, pp = q.get("ulla_forward_end_vs_prior_mmd"), q.get("prior_vs_prior_mmd")
        if ud is not None and pp:
            ax.text(xi, top, f"UD end\n{float(ud) / float(pp):.0f}× prior\nMMD²", ha="center", va="top", fontsize=6,
                    color="C5")
    ax.legend(fontsize=8, loc="lower right")
    # ratios hide scale (a 4x ratio on a 0.004 MMD is 0.012): each tick carries OLLA's own figure and floor
    ticks = []
    for n in names:
        ref, floor = by.get((n, "OLLA")), ratios.get(n, {}).get("quality_floor_train_vs_test", np.nan)
        metric = (ref or {}).get("quality_metric", "")
        ticks.append(n if ref is None else f"{n}\nOLLA {float(ref['quality']):.3g} {metric}, floor {float(floor):.2g}")
    ax.set_xticks(x, ticks, rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def cost_overview(path: str | Path, rows: list[dict], ratios: Mapping[str, Mapping]) -> None:
    """Sampling cost per benchmark relative to the unconstrained loop of the same dynamics, network and N.

    One bar group per benchmark and dynamics: landing, Newton projection and the network-only floor, on a log
    axis with the 1.15 target drawn; the figures over the bars are the landing ratio.
    """
    names = list(dict.fromkeys(r["benchmark"] for r in rows))
    by = {(r["benchmark"], r["sampler"]): r for r in rows}
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 0.9 * len(names) + 3), 4.8), sharey=True)
    x = np.arange(len(names))
    for ax, dyn, pre in ((axes[0], "overdamped", "OLLA"), (axes[1], "underdamped", "ULLA")):
        for j, (s, colour) in enumerate(((pre, "C0"), (f"{pre}-P", "C3"), (f"floor {dyn}", "0.6"))):
            vals = []
            for n in names:
                r, ref = by.get((n, s)), by.get((n, f"unconstrained {dyn}"))
                vals.append(r["wall_s"] / ref["wall_s"] if r and ref and ref["wall_s"] > 0 else np.nan)
            ax.bar(x - 0.3 + 0.3 * j, vals, 0.3, color=colour, label=s.replace(f" {dyn}", ""))
            if j == 0:
                for xi, v in zip(x, vals):
                    if np.isfinite(v):
                        ax.text(xi - 0.3, v, f"{v:.2f}", ha="center", va="bottom", fontsize=6, rotation=90)
        ax.axhline(1.0, color="k", lw=0.6)
        ax.axhline(1.15, color="C2", lw=0.8, ls="--", label="target 1.15")
        ax.set_yscale("log")
        ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
        r0 = next((r for r in rows if r["dynamics"] == dyn), None)
        where = f"{r0['device']}, {r0['precision']}" if r0 else ""
        ax.set_title(f"{dyn} ({where}): wall time / unconstrained loop's", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("same network, N, batch and precision (log)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
