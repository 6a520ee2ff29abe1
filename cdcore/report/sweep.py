"""The sweep's summary table: each score's mean and spread over seeds."""

from __future__ import annotations

from typing import Any

import numpy as np

KEYS = ("jsd", "violation_max", "drop_rate", "wall_s")


def seed_spread(points: list[dict], keys: tuple[str, ...] = KEYS) -> list[dict[str, Any]]:
    """Mean and sample standard deviation over seeds per (method, data set, sampler) of the main scores."""
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        for r in p["rows"]:
            groups.setdefault((p["method"], p["dataset"], r["sampler"]), []).append(r)
    out = []
    for (method, dataset, sampler), rows in sorted(groups.items()):
        row: dict[str, Any] = {"method": method, "dataset": dataset, "sampler": sampler, "n_seeds": len(rows)}
        for k in keys:
            v = np.array([r[k] for r in rows], dtype=float)
            row[f"{k}_mean"], row[f"{k}_std"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
        out.append(row)
    return out
