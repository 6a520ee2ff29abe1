"""Inverse problems of the NAMM paper (reference §1.7): pixel-subset measurements A(x) of Burgers and
Kolmogorov images and their noisy observations y = A(x) + σ_y ε; the posterior sampler is
:func:`cdcore.methods.namm.sample.mirror_dps`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cdcore.data.images import ProblemData

PROBLEMS = ("burgers", "kolmogorov")


@dataclass
class Observation:
    """A pixel-subset measurement A(x) = x[:, mask] on NCHW images; ``mask`` is (C, H, W) bool."""

    problem: str
    mask: Tensor
    description: str

    def __call__(self, x: Tensor) -> Tensor:
        return x[:, self.mask.to(x.device)]

    @property
    def m(self) -> int:
        return int(self.mask.sum())

    def image(self, y: Tensor) -> Tensor:
        """Observations (B, m) -> NCHW images with NaN where nothing is observed (for plots)."""
        out = torch.full((y.shape[0], *self.mask.shape), float("nan"), dtype=y.dtype, device=y.device)
        out[:, self.mask.to(y.device)] = y
        return out

    def spec(self) -> dict:
        return {"problem": self.problem, "description": self.description, "m": self.m,
                "image_chw": list(self.mask.shape)}


def burgers_observation(shape: tuple[int, int, int], fraction: float = 1 / 8) -> Observation:
    """The first max(1, round(nt·fraction)) time columns (paper: 8 of 64; ci 16×16: 2 of 16), every x row.

    ``shape`` = (nx, nt, 1) (HWC): rows = x, columns = time.
    """
    H, W, C = shape
    k = max(1, round(W * fraction))
    mask = torch.zeros(C, H, W, dtype=torch.bool)
    mask[:, :, :k] = True
    return Observation("burgers", mask, f"first {k} of {W} time columns (all {H} x rows)")


def kolmogorov_observation(shape: tuple[int, int, int], rows: int, cols: int) -> Observation:
    """First and last state (top-left and bottom-right tile), both channels; one state: blocks 1, 8 of 2×4.

    ``rows``·``cols`` is the state tiling of the image (paper 2×4 → states 1 and 8). An image holding a single
    state is cut into the paper's 2×4 grid instead, and its blocks 1 and 8 are observed.
    """
    H, W, C = shape
    single = rows * cols < 2
    r, c = (2, 4) if single else (rows, cols)
    if H % r or W % c:
        raise ValueError(f"image {H}×{W} cannot be cut into a {r}×{c} grid")
    th, tw = H // r, W // c
    mask = torch.zeros(C, H, W, dtype=torch.bool)
    mask[:, :th, :tw] = True
    mask[:, H - th:, W - tw:] = True
    what = (f"blocks 1 and {r * c} ({th}×{tw}, top-left and bottom-right) of a {r}×{c} grid over the single "
            f"{H}×{W} state" if single else f"states 1 and {r * c} ({th}×{tw} tiles, top-left and bottom-right)")
    return Observation("kolmogorov", mask, f"{what}, both channels")


def make_observation(problem: str, data: ProblemData) -> Observation:
    if problem == "burgers":
        return burgers_observation(data.shape)
    if problem == "kolmogorov":
        return kolmogorov_observation(data.shape, int(data.params["rows"]), int(data.params["cols"]))
    raise KeyError(f"no inverse problem for {problem!r}; available: {', '.join(PROBLEMS)}")


def observe(obs: Observation, x: Tensor, sigma_y: float, seed: int) -> Tensor:
    """y = A(x) + σ_y ε (ε from a CPU generator seeded by ``seed``)."""
    ax = obs(x)
    eps = torch.randn(ax.shape, generator=torch.Generator().manual_seed(seed), dtype=ax.dtype)
    return ax + sigma_y * eps.to(ax.device)
