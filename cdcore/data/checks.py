"""Checks of user-supplied points before anything is trained on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cdcore.constraints import Constraint
from cdcore.data.earth import latlon_to_xyz
from cdcore.data.io import DataError, load_points


def load_checked_points(path: str | Path, fmt: str, constraint: Constraint, constraint_name: str,
                        tolerance: float, dataset: str) -> np.ndarray:
    """A file data set's points (lat/lon made unit vectors), refused unless every one lies on the set within
    ``tolerance``: a model trained on infeasible data learns the wrong set."""
    raw, kind = load_points(path, fmt)
    x = latlon_to_xyz(raw) if kind == "latlon" else raw
    if x.shape[1] != constraint.dim:
        raise DataError(f"{path}: points have {x.shape[1]} coordinates but constraint {constraint_name!r} "
                        f"needs {constraint.dim}; fix `constraint` or the file")
    viol = constraint.violation(torch.as_tensor(x, dtype=torch.float64)).numpy()
    bad = viol > tolerance
    if bad.any():
        raise DataError(
            f"{path}: {int(bad.sum())} of {len(x)} points violate constraint {constraint_name!r} beyond tolerance "
            f"{tolerance:g} (worst {viol.max():.3g} at row {int(viol.argmax())}). Project the points onto the set "
            f"before use, or raise datasets.{dataset}.tolerance if the error is expected")
    return x
