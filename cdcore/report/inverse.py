"""The inverse-problem figure of ``cdcore bench namm --experiment inverse``: truth, observation and each sampler's
posterior sample with its constraint residual, per problem; and that suite's table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from cdcore.constraints.images import BurgersConstraint, KolmogorovConstraint, nchw_to_flat, tile_states
from cdcore.data.io import atomic_path
from cdcore.report.tables import fmt_interval




@torch.no_grad()
def residual_map(constraint, x_chw: np.ndarray) -> Optional[np.ndarray]:
    """|h(x)| laid out as an image (Burgers: (x, t) of the 63 later columns; Kolmogorov: |div| per cell)."""
    x = torch.from_numpy(np.asarray(x_chw, dtype=np.float64))[None]
    h = constraint.h(nchw_to_flat(x))[0].abs()
    if isinstance(constraint, BurgersConstraint):
        return h.reshape(constraint.nt - 1, constraint.nx).T.flip(0).numpy()  # rows = x upward, as the image
    if isinstance(constraint, KolmogorovConstraint):
        g = constraint.grid
        div = h.reshape(constraint.n_states, g, g, 1)
        return tile_states(div, constraint.rows, constraint.cols)[..., 0].numpy()
    return None


def plot_examples(path: str | Path, results: Sequence[Mapping[str, Any]],
                  samplers: Sequence[str] = ("dps", "cg_dps", "mirror_dps")) -> None:
    """``namm_dps.png``: per problem, truth, observation, one posterior sample per sampler (row 1) and their |h|
    maps (row 2). ``results``: one {"problem", "_examples", "_constraint"} per problem (``run_inverse``'s
    result), what ``run_dps_suite`` returns under ``"_figure"``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["truth", "observation", *samplers]
    titles = {"truth": "truth", "observation": "observation", "dps": "DPS", "cg_dps": "CG-DPS",
              "mirror_dps": "Mirror DPS"}
    k = max(1, len(results))
    fig, axes = plt.subplots(2 * k, len(cols), figsize=(2.3 * len(cols), 2.3 * 2 * k), squeeze=False)
    for i, res in enumerate(results):
        ex, con = res["_examples"], res["_constraint"]
        ch = 0  # Burgers: the only channel; Kolmogorov: u (x-velocity)
        finite = np.concatenate([ex[c][ch][np.isfinite(ex[c][ch])].ravel() for c in cols])
        vmin, vmax = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
        maps = {c: residual_map(con, ex[c]) for c in cols if c != "observation"}
        fin = [m[np.isfinite(m)] for m in maps.values() if m is not None]
        rmax = max((float(v.max()) for v in fin if v.size), default=1.0) or 1.0
        for j, c in enumerate(cols):
            ax = axes[2 * i][j]
            ax.imshow(np.ma.masked_invalid(ex[c][ch]), vmin=vmin, vmax=vmax, cmap="viridis")
            label = "u" if res["problem"] == "kolmogorov" else "u(x, t)"
            ax.set_title(f"{res['problem']}: {titles[c]}" if j == 0 else titles[c], fontsize=8)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
            ax2 = axes[2 * i + 1][j]
            ax2.set_xticks([]), ax2.set_yticks([])
            m = maps.get(c)
            if m is None:
                ax2.axis("off")
                continue
            ax2.imshow(m, vmin=0.0, vmax=rmax, cmap="magma")
            ax2.set_title(f"|h| mean {float(np.mean(m)):.2g}", fontsize=7)  # nan for a non-finite sample
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def format_dps_report(report: dict) -> str:
    """Markdown: per problem and sampler, mean [95% t-interval] over seeds, then the targets."""
    cols = ["problem", "sampler", "ζ", "w", "misfit (σ_y " + f"{report['sigma_y']:g})", "ℓ mean", "ℓ median",
            "RMSE to truth", "wall s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for problem, per in report["summary"].items():
        for sampler, s in per.items():
            r = next(r for r in report["rows"] if r["problem"] == problem and r["sampler"] == sampler)
            lines.append("| " + " | ".join([
                problem, sampler, f"{r['zeta']:g}", f"{r['constraint_weight']:g}" if sampler == "cg_dps" else "-",
                fmt_interval(s["misfit"]), fmt_interval(s["constraint_mean"], "{:.3g}"), fmt_interval(s["constraint_median"], "{:.3g}"),
                fmt_interval(s["rmse_truth"]), fmt_interval(s["wall_s"], "{:.1f}")]) + " |")
    t = report["targets"]
    lines += ["", f"Intervals: {report['interval']}; seeds {report['seeds']}; {report['steps']} steps, "
                  f"ζ schedule {report['zeta_schedule']}.", f"Target: {t['rule']}."]
    for problem, p in t["problems"].items():
        parts = []
        for b, v in p["vs"].items():
            d = v["paired_difference_mirror_minus_baseline"]
            parts.append(f"vs {b}: ℓ {v['constraint_mirror']:.3g} vs {v['constraint_baseline']:.3g} "
                         f"(ratio {v['constraint_ratio']:.2f}, paired diff {fmt_interval(d, '{:+.3g}')}) "
                         f"{'ok' if v['constraint_met'] else 'FAIL'}; misfit {v['misfit_mirror']:.3f} ≤ "
                         f"{v['misfit_bound']:.3f} {'ok' if v['misfit_met'] else 'FAIL'}")
        lines.append(f"- {problem}: {'MET' if p['met'] else 'NOT MET'} — " + "; ".join(parts))
    for problem, lim in report.get("limits", {}).items():
        unc = lim["unconditional_constraint_mean"]
        lines.append(f"- {problem} limits: NAMM ℓ(f(g(x))) {lim['namm_constraint_f_g']:.3g}, RMSE of "
                     f"A(f(g(x))) − A(x) {lim['namm_cycle_rmse_observed']:.3f}; unconditional samples ℓ "
                     + ", ".join(f"{m} {v:.3g}" for m, v in unc.items()))
    n = sum(p["met"] for p in t["problems"].values())
    lines.append(f"\ntarget met on {n}/{len(t['problems'])} problems; scale {report['scale']}, device "
                 f"{report['device']}, {report['total_s']:.0f}s")
    return "\n".join(lines)
