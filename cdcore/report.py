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
