"""The evaluate stage's figure of a landing data set: a Mollweide map on S², else two principal components."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from cdcore.report import scatter_pca, sphere_map


def samples_map(path: str | Path, constraint_name: str, dim: int, test: np.ndarray,
                samples: Mapping[str, np.ndarray], scores: Mapping[str, float], name: str) -> None:
    if constraint_name == "sphere" and dim == 3:
        sphere_map(path, test, samples, title=f"{name}: held-out data vs samples", scores=scores)
    else:
        scatter_pca(path, test, samples, title=f"{name}: held-out data vs samples (2 principal components)",
                    scores=scores)
