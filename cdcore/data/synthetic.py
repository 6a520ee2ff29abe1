"""Synthetic data on S² that needs nothing outside the repository."""

from __future__ import annotations

import numpy as np


def sample_vmf(mu: np.ndarray, kappa: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Exact von Mises–Fisher samples on S² (Wood 1994; closed form of w for d = 3)."""
    mu = mu / np.linalg.norm(mu)
    u = rng.uniform(size=n)
    w = 1.0 + np.log(u + (1.0 - u) * np.exp(-2.0 * kappa)) / kappa
    phi = rng.uniform(0, 2 * np.pi, size=n)
    s = np.sqrt(np.clip(1 - w * w, 0, None))
    local = np.stack([s * np.cos(phi), s * np.sin(phi), w], axis=1)
    # rotate e_z to mu with a Householder reflection (det −1 is harmless for an isotropic law)
    e = np.array([0.0, 0.0, 1.0])
    v = e - mu
    if np.linalg.norm(v) < 1e-12:
        return local
    v /= np.linalg.norm(v)
    H = np.eye(3) - 2 * np.outer(v, v)
    return local @ H.T


def vmf_mixture(n: int, components: int, kappa: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal-weight mixture with random means; returns (points (n, 3), means (K, 3))."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(components, 3))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    labels = rng.integers(0, components, size=n)
    x = np.empty((n, 3))
    for k in range(components):
        idx = np.flatnonzero(labels == k)
        x[idx] = sample_vmf(means[k], kappa, len(idx), rng)
    return x, means
