"""The landing benchmark suite (landing.md §3): data, constraint, settings and quality metric per problem.

Each benchmark carries the released hyper-parameters of the landing paper
(landing.md §1.7) adapted where the problem is a synthetic stand-in, and a
``ci`` scale small enough to run every sampler on a 2-core CPU in minutes.
Data that live in ``shared/`` (dipeptide, robot arm, SO(10) circle) are read
from the folder given; a benchmark whose data are absent is reported as
skipped, never silently dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from cdcore import constraints
from cdcore.config.landing import BENCHMARK_SETTINGS, POLYTOPE_KW, BenchmarkSettings
from cdcore.data.earth import latlon_to_xyz, read_latlon_csv
from cdcore.metrics import (
    direction_jsd,
    hist1d_jsd,
    jsd_latlon,
    kabsch_rmsd,
    pca_hist_jsd,
    trace_power_jsd,
)

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # train, val, test


class BenchmarkDataMissing(FileNotFoundError):
    """The benchmark's data are not on this machine (e.g. shared/ is absent)."""


@dataclass(frozen=True, kw_only=True)
class Benchmark(BenchmarkSettings):
    """A benchmark's released settings (:class:`~cdcore.config.landing.BenchmarkSettings`) with its data
    loader and its quality metric ``quality(samples, test, train) -> float`` (lower is better)."""

    load: Callable[[int, "Paths"], Arrays]
    quality: Callable[[np.ndarray, np.ndarray, np.ndarray], float]

    def make_constraint(self) -> constraints.Constraint:
        return constraints.make(self.constraint, **self.constraint_kwargs)


@dataclass(frozen=True)
class Paths:
    """Where benchmark inputs live: the repository's assets and the shared data folder."""

    assets: Path
    shared: Optional[Path]

    def shared_file(self, *parts: str) -> Path:
        if self.shared is None:
            raise BenchmarkDataMissing("no shared/ folder given; set CDCORE_SHARED or place shared/ beside the repository")
        p = self.shared.joinpath(*parts)
        if not p.is_file():
            raise BenchmarkDataMissing(f"{p} not found")
        return p


def split(x: np.ndarray, seed: int) -> Arrays:
    perm = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, len(x) // 10)
    n_test = max(1, len(x) // 10)
    tr, va, te = perm[: len(x) - n_val - n_test], perm[len(x) - n_val - n_test: len(x) - n_test], perm[len(x) - n_test:]
    return x[tr].astype(np.float32), x[va].astype(np.float32), x[te].astype(np.float32)


# ----- data -------------------------------------------------------------------
def load_earthquake(seed: int, paths: Paths) -> Arrays:
    return split(latlon_to_xyz(read_latlon_csv(paths.assets / "earth" / "earthquake.csv")), seed)


def so_n_mixture(n_points: int, n: int, modes: int, spread: float, seed: int) -> np.ndarray:
    """K-mode mixture on SO(n): R = R_k expm(s A), A skew with N(0, 1) entries, R_k Haar (landing.md §7.2)."""
    g = torch.Generator().manual_seed(seed)
    son = constraints.make("son", n=n)
    centres = son.sample_prior(modes, generator=g).double().reshape(modes, n, n)
    U, _, Vt = torch.linalg.svd(centres)  # polar factor: orthogonal to float64 precision, det unchanged (> 0)
    centres = U @ Vt
    labels = torch.randint(0, modes, (n_points,), generator=g)
    B = torch.randn(n_points, n, n, generator=g, dtype=torch.float64)
    A = (B - B.transpose(1, 2)) / math.sqrt(2)
    R = centres[labels] @ torch.linalg.matrix_exp(spread * A)
    return R.reshape(n_points, n * n).numpy()


def load_so10_3w(seed: int, paths: Paths) -> Arrays:
    return split(so_n_mixture(4000, 10, 3, 0.25, seed=1234), seed)


def load_so10_5w(seed: int, paths: Paths) -> Arrays:
    return split(so_n_mixture(4000, 10, 5, 0.25, seed=4321), seed)


def load_so10_circle(seed: int, paths: Paths) -> Arrays:
    x = np.load(paths.shared_file("data", "so10", "SO10_circle.npy"))
    x = x[np.linalg.det(x.reshape(-1, 10, 10)) > 0]
    return split(x, seed)


def _surface_loader(name: str) -> Callable[[int, Paths], Arrays]:
    def load(seed: int, paths: Paths) -> Arrays:
        c = constraints.make(name)
        return split(c.sample_density(4000, seed=1234).double().numpy(), seed)

    return load


def load_dipeptide(seed: int, paths: Paths) -> Arrays:
    x = np.load(paths.shared_file("data", "dipeptide", "dipeptide_refined_phi_psiwin.npy"))
    return split(x.reshape(len(x), -1), seed)


def load_robot(seed: int, paths: Paths) -> Arrays:
    x = np.load(paths.shared_file("data", "robot_arm", "robot_7dof_joints_paths.npy"))
    return split(x.reshape(len(x), -1).astype(np.float64), seed)


def load_ball_gmm(seed: int, paths: Paths) -> Arrays:
    """Four Gaussian blobs near the rim of the unit disc, cut to the disc (MDM's ℓ2-ball GMM)."""
    rng = np.random.default_rng(1234)
    ang = np.arange(4) * np.pi / 2 + np.pi / 4
    centres = 0.7 * np.stack([np.cos(ang), np.sin(ang)], 1)
    x = centres[rng.integers(0, 4, 12000)] + 0.15 * rng.normal(size=(12000, 2))
    x = x[np.linalg.norm(x, axis=1) < 1.0][:4000]
    return split(x, seed)


def load_simplex_dirichlet(seed: int, paths: Paths) -> Arrays:
    rng = np.random.default_rng(1234)
    return split(rng.dirichlet([2.0, 4.0, 8.0], size=4000), seed)


def load_simplex7_dirichlet(seed: int, paths: Paths) -> Arrays:
    """MDM's 7-simplex, Dirichlet(1, 2, 2, 4, 4, 8, 8): mass near the faces where the small concentrations vanish."""
    rng = np.random.default_rng(1234)
    return split(rng.dirichlet([1.0, 2.0, 2.0, 4.0, 4.0, 8.0, 8.0], size=4000), seed)


def reflect_into_box(x: np.ndarray, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    """Fold every coordinate into [lo, hi] by mirror reflection at the walls (MDM's reflected hypercube GMM)."""
    w = hi - lo
    y = np.mod(x - lo, 2 * w)
    return lo + np.where(y > w, 2 * w - y, y)


def box_gmm(n_points: int, dim: int, seed: int) -> np.ndarray:
    """A GMM whose components straddle the walls of [−1, 1]^d, reflected inside: mass piles up at the walls and
    corners, where a constrained sampler has to be right."""
    rng = np.random.default_rng(seed)
    centres = rng.choice([-0.9, 0.9], size=(4, dim)) * rng.uniform(0.6, 1.1, size=(4, dim))
    x = centres[rng.integers(0, 4, n_points)] + 0.25 * rng.normal(size=(n_points, dim))
    return reflect_into_box(x)


def _box_gmm_loader(dim: int) -> Callable[[int, Paths], Arrays]:
    return lambda seed, paths: split(box_gmm(4000, dim, seed=1234), seed)


def load_polytope_gmm(seed: int, paths: Paths) -> Arrays:
    """Three Gaussian blobs cut to a random polytope {Ax ≤ b} (the cube cut by four half-spaces): a set whose
    faces meet at arbitrary angles, unlike the box's."""
    poly = constraints.make("polytope", **POLYTOPE_KW)
    rng = np.random.default_rng(1234)
    centres = np.array([[0.55, 0.55], [-0.6, 0.2], [0.1, -0.65]])
    x = centres[rng.integers(0, 3, 16000)] + 0.3 * rng.normal(size=(16000, 2))
    inside = (poly.g(torch.as_tensor(x)) <= 0).all(dim=1).numpy()
    return split(x[inside][:4000], seed)


# ----- quality metrics --------------------------------------------------------
def _rmsd_jsd(a: np.ndarray, b: np.ndarray, centre: np.ndarray) -> float:
    ra, rb = kabsch_rmsd(a.reshape(-1, 10, 3), centre), kabsch_rmsd(b.reshape(-1, 10, 3), centre)
    hi = float(max(ra.max(), rb.max())) if len(ra) and len(rb) else 1.0
    return hist1d_jsd(ra, rb, 60, 0.0, hi)


def dipeptide_quality(samples: np.ndarray, test: np.ndarray, train: np.ndarray) -> float:
    """Mean of the ψ-histogram JSD and the RMSD-to-centre JSD (60 bins each)."""
    dp = constraints.make("dipeptide")
    psi = lambda a: torch.rad2deg(dp.psi(torch.as_tensor(a, dtype=torch.float64))).numpy()  # noqa: E731
    j_psi = hist1d_jsd(psi(samples), psi(test), 60, 120.0, 180.0)
    centre = train.reshape(-1, 10, 3).mean(0)
    return 0.5 * (j_psi + _rmsd_jsd(samples, test, centre))


def mmd_quality(samples: np.ndarray, test: np.ndarray, train: np.ndarray) -> float:
    from cdcore.metrics import mmd_rbf

    return mmd_rbf(samples, test)


# the quality metric (samples, test, train) -> float and the loader of every benchmark; the settings are
# cdcore.config.landing.BENCHMARK_SETTINGS
_CODE: dict[str, tuple[Callable[[int, Paths], Arrays], Callable[[np.ndarray, np.ndarray, np.ndarray], float]]] = {
    "earth": (load_earthquake, lambda s, t, tr: jsd_latlon(s, t, 30)),
    "so10_3w": (load_so10_3w, lambda s, t, tr: trace_power_jsd(s, t, 10)),
    "so10_5w": (load_so10_5w, lambda s, t, tr: trace_power_jsd(s, t, 10)),
    "so10_circle": (load_so10_circle, lambda s, t, tr: trace_power_jsd(s, t, 10)),
    **{_s: (_surface_loader(_s), lambda s, t, tr: direction_jsd(s, t, 20)) for _s in ("torus", "tangle_cube", "bumpy_sphere")},
    "dipeptide": (load_dipeptide, dipeptide_quality),
    "robot_arm": (load_robot, lambda s, t, tr: pca_hist_jsd(s, t, tr, 60)),
    "ball_gmm": (load_ball_gmm, mmd_quality),
    "simplex_dirichlet": (load_simplex_dirichlet, mmd_quality),
    "simplex7_dirichlet": (load_simplex7_dirichlet, mmd_quality),
    "box_gmm": (_box_gmm_loader(2), mmd_quality),
    "box6_gmm": (_box_gmm_loader(6), mmd_quality),
    "polytope_gmm": (load_polytope_gmm, mmd_quality),
}
BENCHMARKS: dict[str, Benchmark] = {
    name: Benchmark(**{f.name: getattr(st, f.name) for f in fields(st)}, load=_CODE[name][0], quality=_CODE[name][1])
    for name, st in BENCHMARK_SETTINGS.items()}


def get(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise KeyError(f"unknown benchmark {name!r}; available: {', '.join(BENCHMARKS)}") from None
