"""The NAMM constraint benchmarks' image data (Feng, Baptista & Bouman, ICLR 2025): generators of the five problems.

Every benchmark has
- a generator ``make_<name>(n, size="ci"|"paper", seed)`` returning a :class:`ProblemData` with float32
  images ``x`` of shape (N, H, W, C) (HWC, as in the reference code), the generator's parameters and the
  constraint; the generator checks that every sample satisfies the constraint (ℓ_constr <= ``tol``) and
  raises ``ValueError`` otherwise;
- its constraint, one of the image constraints of :mod:`cdcore.constraints.images` (library names ``burgers``,
  ``kolmogorov``, ``periodic_texture``, ``total_brightness`` and ``count``).

Sizes (``size="ci"`` vs ``"paper"``) — reductions made for CPU tests:
- Burgers: 64×64 in both (exact); ``ci`` only means fewer samples.
- Kolmogorov: paper = 64×64 grid, 8 states at t = 3.0 … 4.4 tiled 2×4 → 128×256×2. ``ci`` = 32×32 grid,
  4 states at t = 1.0 … 1.6 tiled 2×2 → 64×64×2. Solver is a torch pseudo-spectral vorticity solver
  (not jax-cfd); velocities come from the streamfunction so the MAC divergence is zero to round-off.
- Periodic: 64×64 (32×32 tile) in both; ``tile`` may be lowered (e.g. 8) for tiny unit tests.
- Total brightness: 64×64 synthetic rings/crescents (a substitute for the proprietary GRMHD images);
  ``image`` may be lowered for tiny unit tests.
- Count: 128×128 with 8 Gaussian blobs in both (``ci`` = fewer samples). Its distance needs a trained
  counting CNN, which is NOT built yet: :class:`CountConstraint` takes any ``counter`` module, and the
  generator checks the count by construction (8 recorded blob centres) instead of by ℓ_constr.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor, nn

from cdcore.constraints.images import (
    ImageConstraint,
    burgers_step,
    BurgersConstraint,
    KOLMOGOROV_SIZES,
    tile_states,
    KolmogorovConstraint,
    PeriodicConstraint,
    BrightnessConstraint,
    CountConstraint,
    Size,
)



# ----------------------------------------------------------------------------------------------------------
# shared
# ----------------------------------------------------------------------------------------------------------
@dataclass
class ProblemData:
    """One benchmark's data set: images (N, H, W, C) float32, generator parameters and constraint."""

    name: str
    x: np.ndarray
    params: dict[str, Any]
    constraint: "ImageConstraint"
    tol: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def flat(self) -> Tensor:
        """The images as the constraint sees them: (N, H·W·C) float32 tensor."""
        return torch.from_numpy(self.x.reshape(self.x.shape[0], -1))


def _check(name: str, constraint: ImageConstraint, x: np.ndarray, tol: float) -> float:
    with torch.no_grad():
        d = constraint.distance(torch.from_numpy(x.reshape(x.shape[0], -1)).double())
    worst = float(d.max()) if d.numel() else 0.0
    if not np.isfinite(x).all() or not worst <= tol:
        raise ValueError(f"{name}: generated data violate the constraint (max ℓ_constr {worst:.3g} > tol {tol:g})")
    return worst


# ----------------------------------------------------------------------------------------------------------
# 1D Burgers
# ----------------------------------------------------------------------------------------------------------
BURGERS_DEFAULTS = dict(mu=1.0, nu=0.05, length=10.0, nx=64, nt=64, dt=0.025, substeps=5, matern_length=0.2)


def _matern15(x: np.ndarray, length: float) -> np.ndarray:
    r = np.abs(x[:, None] - x[None, :]) * math.sqrt(3.0) / length
    return (1.0 + r) * np.exp(-r)


def _psd_factor(K: np.ndarray) -> np.ndarray:
    """A square root L of a PSD (possibly singular) covariance, L Lᵀ = K, via eigh (tiny eigenvalues clipped)."""
    w, V = np.linalg.eigh(K)
    return V * np.sqrt(np.clip(w, 0.0, None))


def make_burgers(n: Optional[int] = None, size: Size = "ci", seed: int = 0, tol: float = 1e-5,
                 nx: int = 64, nt: int = 64) -> ProblemData:
    """1D Burgers' trajectories as nx×nt×1 images (64×64, explicit Euler, as the reference data really are).

    ``nx``/``nt`` may be lowered for CPU smoke benchmarks (same domain length, so a coarser x-grid).
    """
    n = n or (256 if size == "ci" else 10_000)
    p = dict(BURGERS_DEFAULTS, nx=nx, nt=nt)
    rng = np.random.default_rng(seed)
    grid = np.linspace(-1.0, 1.0, p["nx"])
    L = _psd_factor(_matern15(grid, p["matern_length"]))
    u = 1.0 + rng.standard_normal((n, p["nx"])) @ L.T
    u = (u - u.min(1, keepdims=True)) / (u.max(1, keepdims=True) - u.min(1, keepdims=True))
    dx = p["length"] / (p["nx"] - 1)
    cols = []
    for _ in range(p["nt"]):
        for _ in range(p["substeps"]):
            u = burgers_step(u, dx, p["dt"], p["mu"], p["nu"])
        cols.append(u)
    sol = np.stack(cols, axis=1)  # (n, t, x)
    img = np.flip(sol.transpose(0, 2, 1), axis=1)[..., None].astype(np.float32)  # (n, x↑, t, 1)
    img = np.ascontiguousarray(img)
    c = BurgersConstraint(nx=p["nx"], nt=p["nt"], mu=p["mu"], nu=p["nu"], length=p["length"], dt=p["dt"],
                          substeps=p["substeps"])
    worst = _check("burgers", c, img, tol)
    return ProblemData("burgers", img, {**p, "n": n, "seed": seed, "size": size}, c, tol, {"max_distance": worst})


# ----------------------------------------------------------------------------------------------------------
# Divergence-free Kolmogorov flow
# ----------------------------------------------------------------------------------------------------------
KOLMOGOROV_DEFAULTS = dict(viscosity=1e-3, dt=0.01, save_every=20, drag=0.1, forcing_wavenumber=4,
                           forcing_magnitude=1.0, max_velocity=3.0, peak_wavenumber=4)


def _wavenumbers(n: int, dtype=torch.float64):
    k = torch.fft.fftfreq(n, 1.0 / n, dtype=dtype)
    kr = torch.fft.rfftfreq(n, 1.0 / n, dtype=dtype)
    kx, ky = torch.meshgrid(k, kr, indexing="ij")  # axis 0 = x, axis 1 = y (rfft axis)
    return kx, ky


def kolmogorov_trajectories(n_traj: int, grid: int, save_steps: list[int], seed: int = 0,
                            viscosity: float = 1e-3, dt: float = 0.01, drag: float = 0.1,
                            forcing_wavenumber: int = 4, forcing_magnitude: float = 1.0,
                            max_velocity: float = 3.0, peak_wavenumber: int = 4) -> np.ndarray:
    """Pseudo-spectral vorticity solver on [0, 2π]², returning streamfunctions (n_traj, S, grid, grid) float64.

    ω_t + u·∇ω = ν Δω − drag·ω + curl f,  f = (A sin(k y), 0)  (Kolmogorov forcing with linear drag),
    Crank–Nicolson on the linear terms, Heun on advection, 2/3 dealiasing. Initial vorticity: random phases with
    a spectrum peaked at ``peak_wavenumber``, scaled to max speed ``max_velocity`` (approximates jax-cfd's
    ``filtered_velocity_field``).
    """
    g = torch.Generator().manual_seed(seed)
    kx, ky = _wavenumbers(grid)
    k2 = kx**2 + ky**2
    inv_k2 = torch.where(k2 > 0, 1.0 / k2.clamp_min(1e-12), torch.zeros_like(k2))
    kmax = grid // 2
    dealias = ((kx.abs() < 2 * kmax / 3) & (ky.abs() < 2 * kmax / 3)).to(torch.float64)
    lin = -viscosity * k2 - drag
    a_plus, a_minus = 1 + 0.5 * dt * lin, 1 - 0.5 * dt * lin
    y = torch.arange(grid, dtype=torch.float64) * 2 * math.pi / grid
    force = (-forcing_magnitude * forcing_wavenumber * torch.cos(forcing_wavenumber * y)).expand(grid, grid)
    force_hat = torch.fft.rfft2(force)

    def velocity(w_hat):
        psi_hat = w_hat * inv_k2
        return torch.fft.irfft2(1j * ky * psi_hat, s=(grid, grid)), torch.fft.irfft2(-1j * kx * psi_hat, s=(grid, grid))

    def nonlinear(w_hat):
        u, v = velocity(w_hat)
        wx = torch.fft.irfft2(1j * kx * w_hat, s=(grid, grid))
        wy = torch.fft.irfft2(1j * ky * w_hat, s=(grid, grid))
        return -torch.fft.rfft2(u * wx + v * wy) * dealias

    # initial condition
    kk = k2.sqrt()
    amp = torch.exp(-0.5 * (kk - peak_wavenumber) ** 2) * (k2 > 0)
    noise = torch.randn(n_traj, grid, grid, generator=g, dtype=torch.float64)
    w_hat = torch.fft.rfft2(noise) * amp * dealias
    u, v = velocity(w_hat)
    speed = torch.sqrt(u**2 + v**2).amax(dim=(-2, -1), keepdim=True)
    w_hat = w_hat * (max_velocity / speed)

    saved, step, last = [], 0, max(save_steps)
    todo = set(save_steps)
    while step <= last:
        if step in todo:
            saved.append(torch.fft.irfft2(w_hat * inv_k2, s=(grid, grid)))
        if step == last:
            break
        n0 = nonlinear(w_hat)
        w1 = (a_plus * w_hat + dt * (n0 + force_hat)) / a_minus
        w_hat = (a_plus * w_hat + dt * (0.5 * (n0 + nonlinear(w1)) + force_hat)) / a_minus
        step += 1
    psi = torch.stack(saved, dim=1)
    if not torch.isfinite(psi).all():
        raise ValueError("kolmogorov solver diverged (non-finite streamfunction)")
    return psi.numpy()


def streamfunction_to_mac(psi: np.ndarray, h: float) -> np.ndarray:
    """Corner streamfunction -> MAC velocities (..., n, n, 2): u = ∂ψ/∂y, v = −∂ψ/∂x by backward differences.

    With these, the backward-difference divergence cancels exactly (up to float round-off).
    """
    u = (psi - np.roll(psi, 1, axis=-1)) / h
    v = -(psi - np.roll(psi, 1, axis=-2)) / h
    return np.stack([u, v], axis=-1)


def make_kolmogorov(n: Optional[int] = None, size: Size = "ci", seed: int = 0, tol: float = 1e-4,
                    layout: Optional[dict[str, Any]] = None) -> ProblemData:
    """Divergence-free Kolmogorov flow states, tiled into one image (see module docstring for sizes).

    ``layout`` overrides entries of the size's layout (grid, n_states, t_first, rows, cols), e.g. one 16×16
    state for CPU smoke benchmarks.
    """
    s = {**KOLMOGOROV_SIZES[size], **(layout or {})}
    n = n or (128 if size == "ci" else 10_000)
    p = dict(KOLMOGOROV_DEFAULTS)
    first = round(s["t_first"] / p["dt"])
    save_steps = [first + i * p["save_every"] for i in range(s["n_states"])]
    psi = kolmogorov_trajectories(n, s["grid"], save_steps, seed=seed, viscosity=p["viscosity"], dt=p["dt"],
                                  drag=p["drag"], forcing_wavenumber=p["forcing_wavenumber"],
                                  forcing_magnitude=p["forcing_magnitude"], max_velocity=p["max_velocity"],
                                  peak_wavenumber=p["peak_wavenumber"])
    vel = streamfunction_to_mac(psi, 2 * math.pi / s["grid"])  # (n, S, g, g, 2)
    img = np.ascontiguousarray(tile_states(vel, s["rows"], s["cols"]).astype(np.float32))
    c = KolmogorovConstraint(grid=s["grid"], n_states=s["n_states"], rows=s["rows"], cols=s["cols"])
    worst = _check("kolmogorov", c, img, tol)
    params = {**p, **s, "n": n, "seed": seed, "size": size, "save_steps": save_steps}
    return ProblemData("kolmogorov", img, params, c, tol, {"max_distance": worst})


# ----------------------------------------------------------------------------------------------------------
# Periodic binary textures
# ----------------------------------------------------------------------------------------------------------


def _periodic_kernel(t: np.ndarray, scale: float = 0.7, length: float = 0.7, period: float = 1.0) -> np.ndarray:
    d = np.abs(t[:, None] - t[None, :])
    return scale**2 * np.exp(-2.0 * np.sin(np.pi * d / period) ** 2 / length**2)


def make_periodic(n: Optional[int] = None, size: Size = "ci", seed: int = 0, tile: int = 32,
                  tol: float = 1e-6) -> ProblemData:
    """Binary 2×2-periodic textures (2·tile)² from a periodic-kernel Gaussian field (singular C: eigh factor)."""
    n = n or (256 if size == "ci" else 10_000)
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, tile)
    # C = C1 ⊙ C2 on the tile grid = K1 ⊗ K1 (row-major flattening), singular: factor K1 = L1 L1ᵀ by eigh,
    # then (L1 ⊗ L1) vec(Z) = vec(L1 Z L1ᵀ) samples N(0, C) without the 1024×1024 factorisation.
    L1 = _psd_factor(_periodic_kernel(t))
    field_ = 0.5 + L1 @ rng.standard_normal((n, tile, tile)) @ L1.T
    field_ = np.clip(field_, 0.0, 1.0)
    img = (np.tile(field_, (1, 2, 2)) > 0.5).astype(np.float32)[..., None]
    c = PeriodicConstraint(tile=tile)
    worst = _check("periodic_texture", c, img, tol)
    return ProblemData("periodic_texture", img, {"n": n, "seed": seed, "size": size, "tile": tile,
                                                 "kernel_scale": 0.7, "kernel_length": 0.7, "threshold": 0.5},
                       c, tol, {"max_distance": worst})


# ----------------------------------------------------------------------------------------------------------
# Total brightness
# ----------------------------------------------------------------------------------------------------------


def make_brightness(n: Optional[int] = None, size: Size = "ci", seed: int = 0, image: int = 64,
                    total: float = 120.0, tol: float = 1e-3) -> ProblemData:
    """Synthetic black-hole-like rings/crescents, non-negative, each rescaled to Σx = ``total``.

    SUBSTITUTE for the paper's proprietary GRMHD images: Gaussian ring (radius, width random), brightness
    asymmetry 1 + a·cos(φ − φ0) (crescent), random centre jitter and a faint diffuse Gaussian halo.
    """
    n = n or (256 if size == "ci" else 10_000)
    rng = np.random.default_rng(seed)
    s = image / 64.0
    yy, xx = np.meshgrid(np.arange(image) + 0.5, np.arange(image) + 0.5, indexing="ij")
    cx = image / 2 + rng.uniform(-3, 3, n) * s
    cy = image / 2 + rng.uniform(-3, 3, n) * s
    radius = rng.uniform(8, 20, n) * s
    width = rng.uniform(1.5, 4.0, n) * s
    asym = rng.uniform(0.0, 0.9, n)
    phi0 = rng.uniform(-np.pi, np.pi, n)
    halo = rng.uniform(0.0, 0.2, n)
    dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
    rho, phi = np.sqrt(dx**2 + dy**2), np.arctan2(dy, dx)
    ring = np.exp(-0.5 * ((rho - radius[:, None, None]) / width[:, None, None]) ** 2)
    ring = ring * (1 + asym[:, None, None] * np.cos(phi - phi0[:, None, None]))
    ring = ring + halo[:, None, None] * np.exp(-0.5 * (rho / (2 * radius[:, None, None])) ** 2)
    img = ring / ring.sum(axis=(1, 2), keepdims=True) * total
    img = img.astype(np.float32)[..., None]
    c = BrightnessConstraint(image=image, total=total)
    worst = _check("total_brightness", c, img, tol)
    return ProblemData("total_brightness", img, {"n": n, "seed": seed, "size": size, "image": image,
                                                 "total": total, "substitute_for": "GRMHD"}, c, tol,
                       {"max_distance": worst})


# ----------------------------------------------------------------------------------------------------------
# Count
# ----------------------------------------------------------------------------------------------------------


def simulate_count_images(n: int, n_src: int | np.ndarray = 8, image: int = 128, seed: int = 0,
                          min_sep: float = 5.0, noise_std: float = 8.5, noise_smooth: float = 4.0,
                          snr_db: float = 15.0, max_flux: float = 10.0):
    """POLISH-style images of ``n_src`` elliptical Gaussian blobs plus smoothed noise, min–max to [0, 1].

    Returns (images (n, H, W, 1) float32, centres list of (k, 2) arrays).
    """
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    counts = np.broadcast_to(np.asarray(n_src), (n,))
    yy, xx = np.meshgrid(np.arange(image), np.arange(image), indexing="ij")
    out, centres = np.empty((n, image, image), np.float32), []
    for i in range(n):
        noise = gaussian_filter(rng.normal(0.0, noise_std, (image, image)), noise_smooth, mode="wrap")
        min_flux = math.sqrt(noise.var() * 10 ** (snr_db / 10))
        k = int(counts[i])
        while True:
            c = rng.integers(0, image, size=(k, 2)).astype(np.float64)
            if k < 2:
                break
            d = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1))
            if d[np.triu_indices(k, 1)].min() > min_sep:
                break
        signal = np.zeros((image, image))
        for cy, cx in c:
            flux = rng.uniform(min_flux, max_flux)
            sx = 0.0
            while sx < 1.0:
                sx = 2 * rng.gamma(1.6, 1.0)
            e = rng.beta(1.7, 4.5)
            sy = sx * math.sqrt((1 - e) / (1 + e))
            th = math.radians(rng.uniform(-90, 90))
            dx, dy = xx - cx, yy - cy
            a = np.cos(th) * dx + np.sin(th) * dy
            b = -np.sin(th) * dx + np.cos(th) * dy
            signal += flux * np.exp(-(a**2 / (4 * math.log(2) * sx**2) + b**2 / (4 * math.log(2) * sy**2)))
        signal -= signal.mean()
        img = signal + noise
        out[i] = (img - img.min()) / (img.max() - img.min())
        centres.append(c)
    return out[..., None], centres


def make_count(n: Optional[int] = None, size: Size = "ci", seed: int = 0, image: int = 128,
               counter: Optional[nn.Module] = None, tol: float = 0.5) -> ProblemData:
    """Count benchmark: 128×128 images with exactly 8 blobs.

    The count is checked by construction (8 well-separated centres per image). ℓ_constr is checked only when
    a trained ``counter`` is given (then every image must have |counter(x) − 8| <= ``tol``).
    """
    n = n or (64 if size == "ci" else 10_000)
    img, centres = simulate_count_images(n, 8, image=image, seed=seed)
    if any(len(c) != 8 for c in centres):
        raise ValueError("count: a generated image does not hold exactly 8 sources")
    c = CountConstraint(image=image, count=8, counter=counter)
    extra: dict[str, Any] = {"centres": centres}
    if counter is not None:
        extra["max_distance"] = _check("count", c, img, tol)
    return ProblemData("count", img, {"n": n, "seed": seed, "size": size, "image": image, "count": 8}, c, tol,
                       extra)


# ----------------------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------------------
GENERATORS: dict[str, Callable[..., ProblemData]] = {
    "burgers": make_burgers,
    "kolmogorov": make_kolmogorov,
    "periodic_texture": make_periodic,
    "total_brightness": make_brightness,
    "count": make_count,
}


def make_problem(name: str, **kw: Any) -> ProblemData:
    try:
        return GENERATORS[name](**kw)
    except KeyError:
        raise KeyError(f"unknown NAMM problem {name!r}; available: {', '.join(sorted(GENERATORS))}") from None
