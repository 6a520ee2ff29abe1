"""The exponential moving average of a network's weights: what every method samples with.

At the t-th update (t = 0, 1, …: the updates made before it) the average moves towards the live weights with
decay d_t = min(decay, (1 + t)/(10 + t)), so a short run is not held near its initial weights; ``warmup=False``
uses ``decay`` from the first update. Buffers follow the live network (running statistics, if any).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A copy of ``model`` whose parameters are the moving average; ``module`` is the averaged network, returned
    by the trainers as the model (so it stays trainable: NAMM fine-tunes the f it returns)."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.module = copy.deepcopy(model).eval()
        self.decay, self.warmup = float(decay), warmup

    def decay_at(self, t: int) -> float:
        return min(self.decay, (1.0 + t) / (10.0 + t)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, t: int) -> None:
        d = self.decay_at(t)
        for pe, p in zip(self.module.parameters(), model.parameters()):
            pe.lerp_(p, 1.0 - d)
        for be, b in zip(self.module.buffers(), model.buffers()):
            be.copy_(b)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """The averaged weights; a checkpoint of torch's ``AveragedModel`` (landing before issue 23) is read too."""
        if "n_averaged" in state:
            state = {k.removeprefix("module."): v for k, v in state.items() if k != "n_averaged"}
        self.module.load_state_dict(state)
