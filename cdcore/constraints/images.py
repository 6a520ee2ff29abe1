"""The NAMM image constraints (Feng, Baptista & Bouman, ICLR 2025) on flattened HWC images.

Each set's equality residual ``h(x)`` is the vector whose scaled L1 norm is the paper's constraint distance:
``distance(x) = l1_scale · ‖h(x)‖₁`` reproduces ℓ_constr exactly. Their data generators live in
:mod:`cdcore.data.images`.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

import numpy as np
import torch
from torch import Tensor, nn

from cdcore.constraints.base import Constraint

Size = Literal["ci", "paper"]


def flat_to_nchw(x: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """(B, H·W·C) in HWC order -> (B, C, H, W)."""
    H, W, C = shape
    return x.reshape(x.shape[0], H, W, C).permute(0, 3, 1, 2)


def nchw_to_flat(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H·W·C) in HWC order."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)


class ImageConstraint(Constraint):
    """An equality constraint on flattened HWC images with an L1 constraint distance.

    Subclasses implement ``h``; ``distance(x) = l1_scale · Σ|h(x)|`` is the paper's ℓ_constr (B,).
    """

    name = "image_constraint"
    l1_scale: float = 1.0

    def __init__(self, shape: tuple[int, int, int], n_eq: int, **kw: Any) -> None:
        self.shape = tuple(int(s) for s in shape)
        super().__init__(int(np.prod(self.shape)), n_eq=n_eq, **kw)

    def images(self, x: Tensor) -> Tensor:
        """(B, d) -> (B, H, W, C)."""
        return x.reshape(x.shape[0], *self.shape)

    def distance(self, x: Tensor) -> Tensor:
        return self.h(x).abs().sum(dim=1) * self.l1_scale

    def init_kwargs(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this set through the library (``constraints.make(name, **kw)``),
        as plain JSON values: what a data file and a model record of their constraint."""
        raise NotImplementedError(f"{type(self).__name__} does not record its constructor arguments")

    def spec(self) -> dict:
        return {**super().spec(), "shape": list(self.shape)}


def burgers_step(u: Tensor | np.ndarray, dx: float, dt: float, mu: float, nu: float):
    """One forward-Euler step of u_t = −μ u u_x + ν u_xx with periodic central differences (last axis = x)."""
    lib = torch if isinstance(u, Tensor) else np
    up, um = lib.roll(u, -1, -1), lib.roll(u, 1, -1)
    ux = (up - um) / (2 * dx)
    uxx = (up - 2 * u + um) / dx**2
    return u + dt * (-mu * u * ux + nu * uxx)


class BurgersConstraint(ImageConstraint):
    """1D Burgers' image (rows = x increasing upward, cols = time): each column is 5 Euler steps of the previous.

    h = x[:, 1:] − Euler⁵(x[:, :-1]) over the 64×63 grid (rows in un-flipped x order), ℓ = mean |h|.
    """

    name = "burgers"

    def __init__(self, nx: int = 64, nt: int = 64, mu: float = 1.0, nu: float = 0.05, length: float = 10.0,
                 dt: float = 0.025, substeps: int = 5, **kw: Any) -> None:
        super().__init__((nx, nt, 1), n_eq=nx * (nt - 1), **kw)
        self.nx, self.nt, self.mu, self.nu, self.dt, self.substeps = nx, nt, mu, nu, dt, substeps
        self.length = float(length)
        self.dx = length / (nx - 1)  # x-grid = linspace(0, length, nx), as in the reference code
        self.l1_scale = 1.0 / (nx * (nt - 1))

    def h(self, x: Tensor) -> Tensor:
        img = self.images(x)[..., 0].flip(1)  # (B, x, t) with x increasing along axis 1
        u = img.transpose(1, 2)  # (B, t, x)
        prev = u[:, :-1]
        for _ in range(self.substeps):
            prev = burgers_step(prev, self.dx, self.dt, self.mu, self.nu)
        return (u[:, 1:] - prev).reshape(x.shape[0], -1)

    def spec(self) -> dict:
        return {**super().spec(), "mu": self.mu, "nu": self.nu, "dt": self.dt, "substeps": self.substeps}

    def init_kwargs(self) -> dict[str, Any]:
        return {"nx": int(self.nx), "nt": int(self.nt), "mu": float(self.mu), "nu": float(self.nu),
                "length": self.length, "dt": float(self.dt), "substeps": int(self.substeps)}


KOLMOGOROV_SIZES = {
    # grid, states, first saved time, tiling (rows, cols)
    "ci": dict(grid=32, n_states=4, t_first=1.0, rows=2, cols=2),
    "paper": dict(grid=64, n_states=8, t_first=3.0, rows=2, cols=4),
}


def tile_states(states: np.ndarray | Tensor, rows: int, cols: int):
    """(..., S, n, n, C) -> (..., rows·n, cols·n, C), states placed row-major."""
    *lead, S, n, m, C = states.shape
    s = states.reshape(*lead, rows, cols, n, m, C)
    k = len(lead)
    perm = list(range(k)) + [k, k + 2, k + 1, k + 3, k + 4]
    s = s.permute(*perm) if isinstance(s, Tensor) else s.transpose(*perm)
    return s.reshape(*lead, rows * n, cols * m, C)


def untile_states(img: np.ndarray | Tensor, rows: int, cols: int):
    """Inverse of :func:`tile_states`."""
    *lead, H, W, C = img.shape
    n, m = H // rows, W // cols
    s = img.reshape(*lead, rows, n, cols, m, C)
    k = len(lead)
    perm = list(range(k)) + [k, k + 2, k + 1, k + 3, k + 4]
    s = s.permute(*perm) if isinstance(s, Tensor) else s.transpose(*perm)
    return s.reshape(*lead, rows * cols, n, m, C)


class KolmogorovConstraint(ImageConstraint):
    """Incompressibility of tiled MAC-grid velocity states: h = div per state, ℓ = mean |div|.

    div[i, j] = (u[i,j] − u[i−1,j])/h + (v[i,j] − v[i,j−1])/h, periodic backward differences, h = 2π/grid,
    array axis 0 = x; channel 0 = u, channel 1 = v.
    """

    name = "kolmogorov"

    def __init__(self, grid: int = 64, n_states: int = 8, rows: int = 2, cols: int = 4, **kw: Any) -> None:
        if rows * cols != n_states:
            raise ValueError(f"rows·cols must equal n_states, got {rows}·{cols} != {n_states}")
        super().__init__((rows * grid, cols * grid, 2), n_eq=n_states * grid * grid, **kw)
        self.grid, self.n_states, self.rows, self.cols = grid, n_states, rows, cols
        self.h_grid = 2 * math.pi / grid
        self.l1_scale = 1.0 / (n_states * grid * grid)

    def h(self, x: Tensor) -> Tensor:
        s = untile_states(self.images(x), self.rows, self.cols)  # (B, S, n, n, 2)
        u, v = s[..., 0], s[..., 1]
        div = (u - u.roll(1, -2)) / self.h_grid + (v - v.roll(1, -1)) / self.h_grid
        return div.reshape(x.shape[0], -1)

    def spec(self) -> dict:
        return {**super().spec(), "grid": self.grid, "n_states": self.n_states, "rows": self.rows,
                "cols": self.cols}

    def init_kwargs(self) -> dict[str, Any]:
        return {"grid": int(self.grid), "n_states": int(self.n_states), "rows": int(self.rows), "cols": int(self.cols)}


class PeriodicConstraint(ImageConstraint):
    """A 2×2 tiling of one quadrant: h = [x − tile(quadrant_q(x))]_{q = TL, BL, TR, BR}, ℓ = Σ_q mean|·|."""

    name = "periodic_texture"

    def __init__(self, tile: int = 32, channels: int = 1, **kw: Any) -> None:
        super().__init__((2 * tile, 2 * tile, channels), n_eq=4 * 4 * tile * tile * channels, **kw)
        self.tile = tile
        self.l1_scale = 1.0 / (4 * tile * tile * channels)

    def h(self, x: Tensor) -> Tensor:
        img, t = self.images(x), self.tile
        quads = [img[:, :t, :t], img[:, t:, :t], img[:, :t, t:], img[:, t:, t:]]
        res = [img - q.repeat(1, 2, 2, 1) for q in quads]
        return torch.cat([r.reshape(x.shape[0], -1) for r in res], dim=1)

    def spec(self) -> dict:
        return {**super().spec(), "tile": self.tile}

    def init_kwargs(self) -> dict[str, Any]:
        return {"tile": int(self.tile)}


class BrightnessConstraint(ImageConstraint):
    """Σ pixels = total: h = Σx − total (one row), ℓ = |Σx − total|."""

    name = "total_brightness"

    def __init__(self, image: int = 64, total: float = 120.0, channels: int = 1, **kw: Any) -> None:
        super().__init__((image, image, channels), n_eq=1, **kw)
        self.total = float(total)

    def h(self, x: Tensor) -> Tensor:
        return x.sum(dim=1, keepdim=True) - self.total

    def h_jac(self, x: Tensor) -> Tensor:
        return x.new_ones(x.shape[0], 1, self.dim)

    def spec(self) -> dict:
        return {**super().spec(), "total": self.total}

    def init_kwargs(self) -> dict[str, Any]:
        return {"image": int(self.shape[0]), "total": float(self.total)}


class CountingCNN(nn.Module):
    """The reference counting regressor: conv3(32)-ReLU-avgpool2 → conv3(64)-ReLU-avgpool2 → 256-ReLU → 1.

    Untrained here (the training of the counter is not done yet).
    """

    def __init__(self, image: int = 128, channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * (image // 4) ** 2, 256), nn.ReLU(), nn.Linear(256, 1))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, 1)
        return self.head(self.features(x))


class CountConstraint(ImageConstraint):
    """h = counter(x) − count (one row), ℓ = |counter(x) − count|; ``counter`` is a frozen regressor on NCHW."""

    name = "count"

    def __init__(self, image: int = 128, count: int = 8, counter: Optional[nn.Module] = None, channels: int = 1,
                 **kw: Any) -> None:
        super().__init__((image, image, channels), n_eq=1, **kw)
        self.count = int(count)
        self.counter = counter if counter is not None else CountingCNN(image, channels)
        for p in self.counter.parameters():
            p.requires_grad_(False)
        self.counter.eval()

    def h(self, x: Tensor) -> Tensor:
        p = next(self.counter.parameters())
        out = self.counter(flat_to_nchw(x, self.shape).to(p.dtype))
        return out.to(x.dtype) - self.count

    def spec(self) -> dict:
        return {**super().spec(), "count": self.count}


def kolmogorov(size: Size = "paper", **kw: Any) -> KolmogorovConstraint:
    """The library's Kolmogorov set: a ``size``'s grid and tiling, any of them overridden by keyword."""
    s = KOLMOGOROV_SIZES[size]
    layout = {k: kw.pop(k, s[k]) for k in ("grid", "n_states", "rows", "cols")}
    return KolmogorovConstraint(**layout, **kw)


def as_nchw(x: np.ndarray | Tensor) -> Tensor:
    """(N, H, W, C) images (numpy or tensor) -> float32 (N, C, H, W)."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x, dtype=torch.float32)
    if t.dim() != 4:
        raise ValueError(f"expected images (N, H, W, C), got shape {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2).contiguous()
