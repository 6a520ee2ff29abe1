"""Noise schedules as plain objects: σ(t) of the landing SDEs, the VP-SDE of mirror diffusion, and the
coefficients of an ancestral DDPM step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from cdcore.config.common import sigma_at


@dataclass(frozen=True)
class NoiseSchedule:
    """σ(t) on t ∈ [0, T] discretised in N steps of Δt = T/N."""

    kind: Literal["linear", "geometric", "constant"]
    sigma_min: float
    sigma_max: float
    T: float
    N: int

    @property
    def dt(self) -> float:
        return self.T / self.N

    def time(self, k: int) -> float:
        return k * self.dt

    def sigma(self, t: float) -> float:
        return sigma_at(self.kind, self.sigma_min, self.sigma_max, self.T, t)

    def sigmas(self) -> list[float]:
        """σ_k = σ(t_k) for k = 0..N (plain floats: no device traffic in the loops)."""
        return [self.sigma(self.time(k)) for k in range(self.N + 1)]

    def integrated_variance(self, t: float) -> float:
        """∫_0^t σ(s)² ds: the variance of the forward noise accumulated by time t."""
        a, b = self.sigma_min, self.sigma_max
        if self.kind == "constant":
            return b * b * t
        if self.kind == "linear":
            if b == a:
                return a * a * t
            slope = (b - a) / self.T
            return ((a + slope * t) ** 3 - a**3) / (3 * slope)
        r = math.log(b / a) / self.T
        if r == 0:
            return a * a * t
        return a * a * (math.exp(2 * r * t) - 1) / (2 * r)


class VPSDE:
    """VP-SDE with β(t) = β_min + t(β_max − β_min) on t ∈ [eps_t, 1] (NAMM reference §1.4): x_t = a_t x_0 + s_t ε."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, eps_t: float = 1e-3) -> None:
        self.beta_min, self.beta_max, self.eps_t = beta_min, beta_max, eps_t

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(a_t, s_t): x_t = a_t x_0 + s_t ε."""
        lm = self.log_mean_coeff(t)
        return lm.exp(), (-torch.expm1(2 * lm)).clamp_min(1e-12).sqrt()


def bcast(v: Tensor, like: Tensor) -> Tensor:
    """(B,) per-sample coefficients broadcast against a (B, ...) batch."""
    return v.view(-1, *([1] * (like.dim() - 1)))


@dataclass(frozen=True)
class DDPMCoefficients:
    """The ancestral step of a DDPM with betas β_1..β_T, as Python floats read off the device once, so the step
    loop never syncs with the host: mean = c_x0 x̂_0 + c_xt x_t (or (x_t − eps_coef ε̂)/√α_t), var the
    posterior or the β variance."""

    abar: list[float]
    alphas: list[float]
    c_x0: list[float]
    c_xt: list[float]
    eps_coef: list[float]
    var: list[float]

    @classmethod
    def of(cls, betas: Tensor, abar: Tensor, variance: Literal["posterior", "beta"] = "posterior") -> "DDPMCoefficients":
        betas, abar = betas.double().cpu(), abar.double().cpu()
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        alphas = 1 - betas
        post_var = betas * (1 - abar_prev) / (1 - abar)
        return cls(abar=abar.tolist(), alphas=alphas.tolist(),
                   c_x0=(abar_prev.sqrt() * betas / (1 - abar)).tolist(),
                   c_xt=(alphas.sqrt() * (1 - abar_prev) / (1 - abar)).tolist(),
                   eps_coef=(betas / (1 - abar).sqrt()).tolist(),
                   var=(post_var if variance == "posterior" else betas).tolist())
