"""What every table and JSON report shares: intervals as text and numpy values as JSON."""

from __future__ import annotations

from typing import Any

import numpy as np


def json_default(v: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and arrays (anything else as its text)."""
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def fmt_interval(iv: dict, fmt: str = "{:.3f}") -> str:
    """A :func:`cdcore.metrics.t_interval` as ``mean [lo, hi]`` (the mean alone for one seed)."""
    if iv["n"] > 1:
        return f"{fmt.format(iv['mean'])} [{fmt.format(iv['lo'])}, {fmt.format(iv['hi'])}]"
    return fmt.format(iv["mean"])
