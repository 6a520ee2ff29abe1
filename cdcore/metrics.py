"""Sample-quality and constraint metrics, as the landing paper defines them (landing.md §3)."""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.distance import jensenshannon

from cdcore.data.earth import xyz_to_latlon
from typing import Optional, Sequence

LATLON_RANGE = ((-90.0, 90.0), (-180.0, 180.0))


def js_distance(p: np.ndarray, q: np.ndarray, eps: float = 1e-10) -> float:
    """Jensen–Shannon *distance* (√ divergence, natural log) between two histograms, eps-smoothed."""
    p = np.asarray(p, dtype=np.float64).ravel() + eps
    q = np.asarray(q, dtype=np.float64).ravel() + eps
    return float(jensenshannon(p / p.sum(), q / q.sum()))


def latlon_histogram(x: np.ndarray, bins: int = 30) -> np.ndarray:
    ll = xyz_to_latlon(x)
    h, _, _ = np.histogram2d(ll[:, 0], ll[:, 1], bins=bins, range=LATLON_RANGE)
    return h


def jsd_latlon(a: np.ndarray, b: np.ndarray, bins: int = 30) -> float:
    """JS distance of (lat, lon) histograms of two point sets on S²."""
    return js_distance(latlon_histogram(a, bins), latlon_histogram(b, bins))


def uniform_sphere(n: int, seed: int = 0, dim: int = 3) -> np.ndarray:
    z = np.random.default_rng(seed).normal(size=(n, dim))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def violation_stats(v: np.ndarray) -> dict[str, float]:
    v = np.asarray(v, dtype=np.float64)
    if v.size == 0:
        return {"violation_mean": float("nan"), "violation_max": float("nan")}
    return {"violation_mean": float(np.mean(v)), "violation_max": float(np.max(v))}


def hist1d_jsd(a: np.ndarray, b: np.ndarray, bins: int, lo: float, hi: float, eps: float = 1e-10) -> float:
    ha, _ = np.histogram(np.asarray(a).ravel(), bins=bins, range=(lo, hi))
    hb, _ = np.histogram(np.asarray(b).ravel(), bins=bins, range=(lo, hi))
    return js_distance(ha, hb, eps)


def trace_power_jsd(a: np.ndarray, b: np.ndarray, n: int, powers=(1, 2, 4, 5), bins: int = 100) -> float:
    """SO(n) metric of the landing paper: mean over p of the JSD of 100-bin histograms of tr(R^p)."""
    Ra, Rb = a.reshape(-1, n, n), b.reshape(-1, n, n)
    out = []
    for p in powers:
        ta = np.trace(np.linalg.matrix_power(Ra, p), axis1=1, axis2=2)
        tb = np.trace(np.linalg.matrix_power(Rb, p), axis1=1, axis2=2)
        out.append(hist1d_jsd(ta, tb, bins, -float(n), float(n)))
    return float(np.mean(out))


def pca_hist_jsd(a: np.ndarray, b: np.ndarray, reference: np.ndarray, bins: int = 60) -> float:
    """JSD of 2-D histograms in the first two principal components of ``reference`` (robot-arm metric)."""
    mu = reference.mean(0)
    _, _, vt = np.linalg.svd(reference - mu, full_matrices=False)
    pa, pb, pr = (a - mu) @ vt[:2].T, (b - mu) @ vt[:2].T, (reference - mu) @ vt[:2].T
    lo, hi = pr.min(0) - 0.5 * pr.std(0), pr.max(0) + 0.5 * pr.std(0)
    rng = [(lo[0], hi[0]), (lo[1], hi[1])]
    ha, _, _ = np.histogram2d(pa[:, 0], pa[:, 1], bins=bins, range=rng)
    hb, _, _ = np.histogram2d(pb[:, 0], pb[:, 1], bins=bins, range=rng)
    return js_distance(ha, hb)


def direction_jsd(a: np.ndarray, b: np.ndarray, bins: int = 20) -> float:
    """JSD of (lat, lon) histograms of the directions x/|x| (surfaces around the origin)."""
    return jsd_latlon(a, b, bins)


def kabsch_rmsd(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """RMSD of each conformation (B, m, 3) to ``ref`` (m, 3) after optimal rotation and translation."""
    X = x - x.mean(1, keepdims=True)
    Y = ref - ref.mean(0)
    H = np.einsum("bmi,mj->bij", X, Y)
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.einsum("bij,bjk->bik", U, Vt)))
    D = np.ones((len(x), 3))
    D[:, 2] = d
    R = np.einsum("bij,bj,bjk->bik", U, D, Vt)
    aligned = np.einsum("bmi,bij->bmj", X, R)
    return np.sqrt(((aligned - Y) ** 2).sum(-1).mean(-1))


def mmd_rbf(a: np.ndarray, b: np.ndarray, max_n: int = 2000, seed: int = 0) -> float:
    """Biased MMD² estimate with a Gaussian kernel, bandwidth by the median heuristic on the pooled sample."""
    rng = np.random.default_rng(seed)
    a = a[rng.choice(len(a), min(len(a), max_n), replace=False)].astype(np.float64)
    b = b[rng.choice(len(b), min(len(b), max_n), replace=False)].astype(np.float64)
    z = np.concatenate([a, b])
    sq = (z**2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0)
    bw = np.median(d2[np.triu_indices(len(z), 1)])
    K = np.exp(-d2 / max(bw, 1e-12))
    n = len(a)
    return float(K[:n, :n].mean() + K[n:, n:].mean() - 2 * K[:n, n:].mean())


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, n_projections: int = 200, seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance (POT)."""
    import ot

    return float(ot.sliced_wasserstein_distance(a.astype(np.float64), b.astype(np.float64),
                                                n_projections=n_projections, seed=seed))


def t_interval(values: Sequence[float], level: float = 0.95, lower: Optional[float] = None) -> dict:
    """{"mean", "lo", "hi", "n"}; lo = hi = mean when n = 1 (no spread to estimate: an interval would be invented).

    ``lower`` clips lo at the metric's natural bound (0 for shares, divergences, distances, times).
    """
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    n = len(v)
    if n == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    mean = float(v.mean())
    if n == 1:
        return {"mean": mean, "lo": mean, "hi": mean, "n": 1}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    lo = mean - half if lower is None else max(mean - half, lower)
    return {"mean": mean, "lo": lo, "hi": mean + half, "n": n}
