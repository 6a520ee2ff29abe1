"""The one result type of every sampler and forward simulation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from torch import Tensor

# (x, v or None, step index k) -> score of the landing dynamics at t_k
ScoreFn = Callable[[Tensor, Optional[Tensor], int], Tensor]
# (steps done, current x): called once per step; the sampler never reads a value back to the host for it
Callback = Callable[[int, Tensor], None]


@dataclass
class SampleResult:
    """Samples, which trajectories failed (dropped), and the work done: network calls (``nfe``) and Newton
    iterations per sample where the sampler projects (``newton_iters``); ``paths`` where kept."""

    x: Tensor
    dropped: Tensor
    nfe: int = 0
    newton_iters: Tensor | None = None
    paths: Tensor | None = None

    @property
    def drop_rate(self) -> float:
        return float(self.dropped.float().mean())


PathResult = SampleResult  # the name of the landing loops' result before the three engines shared it
