"""The dual side: projected (resilient) dual ascent on λ, and what λ predicts for the class shares of the
samples (dual.md §1.2, §1.5, Theorem 1)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor



class DualAscent:
    """Projected dual ascent λ ← [λ + η (L − b̃ − 2γλ)]₊ ; γ > 0 is the resilient form."""

    def __init__(self, m: int, lr: float, resilience: float = 0.0, init: Optional[Sequence[float]] = None) -> None:
        self.lr, self.gamma = float(lr), float(resilience)
        self.lam = torch.zeros(m, dtype=torch.float64) if init is None else torch.tensor(init, dtype=torch.float64)
        if self.lam.shape != (m,) or bool((self.lam < 0).any()):
            raise ValueError(f"init must be {m} non-negative numbers, got {init}")

    def step(self, losses: Tensor | Sequence[float], thresholds: Tensor | Sequence[float]) -> Tensor:
        L = torch.as_tensor(losses, dtype=torch.float64)
        b = torch.as_tensor(thresholds, dtype=torch.float64)
        self.lam = torch.clamp(self.lam + self.lr * (L - b - 2.0 * self.gamma * self.lam), min=0.0)
        return self.lam.clone()

    def fixed_point(self, losses: Sequence[float], thresholds: Sequence[float]) -> Tensor:
        """λ* = [(L − b̃)/(2γ)]₊ for constant losses (resilient only)."""
        if self.gamma <= 0:
            raise ValueError("the plain update has no fixed point for constant losses; use resilience > 0")
        L = torch.as_tensor(losses, dtype=torch.float64)
        return torch.clamp((L - torch.as_tensor(thresholds, dtype=torch.float64)) / (2 * self.gamma), min=0.0)

    def state_dict(self) -> dict:
        return {"lam": self.lam.clone(), "lr": self.lr, "gamma": self.gamma}

    def load_state_dict(self, s: dict) -> None:
        self.lam, self.lr, self.gamma = s["lam"].clone().double(), float(s["lr"]), float(s["gamma"])


def mixture_weights(lam: Sequence[float] | np.ndarray) -> np.ndarray:
    """Weights of q^i in q_mix^(λ): λ_i / (1 + Σλ)."""
    lam = np.asarray(lam, dtype=np.float64)
    return lam / (1.0 + lam.sum())


def predicted_shares(class_shares: np.ndarray, constraint_classes: Sequence[Optional[int]],
                     lam: Sequence[float] | np.ndarray) -> np.ndarray:
    """Class shares of q_mix^(λ): w_c = (π_c + Σ_{i: class i = c} λ_i) / (1 + Σλ) (dual.md §1.2, §1.5).

    Constraints without a class (distillation) take their mass outside the classes.
    """
    pi = np.asarray(class_shares, dtype=np.float64).copy()
    lam = np.asarray(lam, dtype=np.float64)
    for c, l in zip(constraint_classes, lam):
        if c is not None:
            pi[c] += l
    return pi / (1.0 + lam.sum())


def oracle_lambdas(class_shares: np.ndarray, constraint_classes: Sequence[int],
                   target: Optional[np.ndarray] = None) -> list[float]:
    """Fixed λ whose mixture gives the constrained classes their target share (uniform by default).

    1 + Σλ is set so that the unconstrained classes keep their total target
    mass; λ_i = target_c (1 + Σλ) − π_c, clipped at 0 (a class already above
    target gets no extra weight). This is per-class loss reweighting with oracle
    weights, the baseline dual training is meant to match without knowing π.
    """
    pi = np.asarray(class_shares, dtype=np.float64)
    tgt = np.full(len(pi), 1.0 / len(pi)) if target is None else np.asarray(target, dtype=np.float64)
    cs = list(constraint_classes)
    if len(set(cs)) != len(cs):
        raise ValueError("oracle_lambdas expects one constraint per class")
    t_c, p_c = tgt[cs].sum(), pi[cs].sum()
    if t_c >= 1.0:
        raise ValueError("the constrained classes take the whole target mass; some class must stay unconstrained")
    scale = (1.0 - p_c) / (1.0 - t_c)
    return [float(max(tgt[c] * scale - pi[c], 0.0)) for c in cs]


def uniform_labels(n: int, num_classes: int, seed: int = 0) -> Tensor:
    """Balanced labels (counts differ by at most one), shuffled: the conditional baseline's sampling labels."""
    g = torch.Generator().manual_seed(seed)
    return (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
