"""The KL constraints of dual training: KL(q^i‖p_θ) ≤ b_i through the diffusion loss on batches of q^i (a
class of the data, for fair sampling) or against a frozen pretrained model (distillation, for fine-tuning
without forgetting), and the data they are drawn from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from cdcore.methods.dual.model import Denoiser, Draw, draw_eps, q_sample


class KLConstraint(Protocol):
    name: str
    cls: Optional[int]          # the class whose share this constraint adds to (None: not a class)
    size: Optional[int]         # data-set size for ratio-matched batches (None: use primal_batch)

    def to(self, device: torch.device) -> "KLConstraint": ...

    def draw(self, model: Denoiser, batch: int, gen: torch.Generator) -> Draw: ...


@dataclass
class DataConstraint:
    """KL(q^i‖p_θ) ≤ b_i through the diffusion loss on batches of q^i's own samples."""

    x: Tensor
    y: Optional[Tensor] = None
    name: str = "c"
    cls: Optional[int] = None

    @property
    def size(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device) -> "DataConstraint":
        return DataConstraint(self.x.to(device), None if self.y is None else self.y.to(device), self.name, self.cls)

    def draw(self, model: Denoiser, batch: int, gen: torch.Generator) -> Draw:
        idx = torch.randint(0, self.x.shape[0], (batch,), generator=gen, device=self.x.device)
        return draw_eps(model, self.x[idx], None if self.y is None else self.y[idx], gen)


@dataclass
class DistillConstraint:
    """KL(p_pre‖p_θ) ≤ b through E‖ε̂_pre(x_t,t) − ε̂_θ(x_t,t)‖² / d against a frozen teacher.

    ``x0=None``: x_t ~ N(0, I) at every t (the paper's shortcut); otherwise x_t is
    the forward-noised teacher sample x0[idx] (the faithful variant).
    """

    teacher: Denoiser
    x0: Optional[Tensor] = None
    name: str = "pretrained"
    cls: Optional[int] = None

    def __post_init__(self) -> None:
        self.teacher = self.teacher.eval().requires_grad_(False)

    @property
    def size(self) -> Optional[int]:
        return None

    def to(self, device: torch.device) -> "DistillConstraint":
        return DistillConstraint(self.teacher.to(device), None if self.x0 is None else self.x0.to(device),
                                 self.name, self.cls)

    def draw(self, model: Denoiser, batch: int, gen: torch.Generator) -> Draw:
        dev = self.teacher.betas.device
        t = torch.randint(model.schedule_cfg.t_min, model.T + 1, (batch,), generator=gen, device=dev)
        if self.x0 is None:
            xt = torch.randn((batch, model.dim), generator=gen, device=dev)
        else:
            idx = torch.randint(0, self.x0.shape[0], (batch,), generator=gen, device=dev)
            eps = torch.randn((batch, model.dim), generator=gen, device=dev)
            xt = q_sample(model, self.x0[idx], t, eps)
        with torch.no_grad():
            target = self.teacher(xt, t)
        return Draw(xt, t, None, target)


@dataclass
class DualData:
    """Objective data q (and labels for a conditional model) plus the constraints.

    ``class_shares`` (π_c in q) lets training log the class shares the λ-mixture predicts.
    """

    x: Tensor
    y: Optional[Tensor] = None
    constraints: list = field(default_factory=list)
    class_shares: Optional[np.ndarray] = None

    @classmethod
    def from_labelled(cls, x: np.ndarray | Tensor, y: np.ndarray | Tensor,
                      constraint_classes: Sequence[int], num_classes: Optional[int] = None) -> "DualData":
        """Fairness set-up: q = all of (x, y); constraint i = the samples of class constraint_classes[i]."""
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        y = torch.as_tensor(np.asarray(y), dtype=torch.long)
        K = int(num_classes if num_classes is not None else int(y.max()) + 1)
        cons = []
        for c in constraint_classes:
            m = y == c
            if not bool(m.any()):
                raise ValueError(f"constraint class {c} has no samples in the data")
            cons.append(DataConstraint(x[m], y[m], name=f"class{c}", cls=int(c)))
        shares = np.bincount(y.numpy(), minlength=K).astype(np.float64) / len(y)
        return cls(x=x, y=y, constraints=cons, class_shares=shares)
