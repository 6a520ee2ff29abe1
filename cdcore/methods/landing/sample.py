"""Sampling a trained landing model: OLLA/ULLA and their projection baselines, from the analytic prior or
the forward chain's end, at a chosen network precision."""

from __future__ import annotations

import math
from typing import Callable, Literal, Optional

import torch
from torch import Tensor

from cdcore.config import DynamicsCfg
from cdcore.constraints import Constraint
from cdcore.dynamics import NoiseSchedule, ScoreFn, forward_paths, sample, SampleResult
from cdcore.methods.errors import DivergenceError
from cdcore.methods.landing.io import dynamics_from
from cdcore.methods.landing.train import SelectFn
from cdcore.nets import ScoreModel


PriorFn = Callable[[int, torch.Generator], Tensor]


def forward_end_prior(constraint: Constraint, x_data: Tensor, schedule: NoiseSchedule, dyn_cfg: DynamicsCfg,
                      handling: str = "landing", pool: int = 4096, seed: int = 0) -> PriorFn:
    """The forward chain's terminal law, simulated from data, as the backward sampler's start.

    Where the forward does not reach any closed-form law in its horizon (the release's dipeptide and robot
    configs: T 0.1–0.2, a perturbation of the data rather than a mixing chain), the release starts its backward
    sampler here ("generate" prior mode). The pool is simulated once; each call draws without replacement while
    the pool lasts, so every sampler of one run starts from the same points and its timing excludes the forward.
    Paths whose terminal projection failed are left out of the pool.
    """
    gen = torch.Generator(device=x_data.device).manual_seed(seed)
    idx = torch.randint(len(x_data), (pool,), generator=gen, device=x_data.device)
    fwd = forward_paths(constraint, x_data[idx].double(), schedule, dynamics_from(dyn_cfg, handling),
                        generator=gen, keep_paths=False)
    # a forward path whose terminal projection failed ends off Σ: a sampler started there would be dropped
    ok = ~fwd.dropped & torch.isfinite(fwd.x).all(dim=1)
    ends = fwd.x[ok].float()
    if len(ends) < max(1, pool // 2):
        raise DivergenceError(f"forward_end_prior: only {len(ends)} of {pool} forward paths from the data ended on "
                              f"the set; check the schedule and landing settings ({dyn_cfg.landing}, alpha "
                              f"{dyn_cfg.alpha:g})")

    def prior(n: int, g: torch.Generator) -> Tensor:
        if n <= len(ends):
            pick = torch.randperm(len(ends), generator=g, device=g.device)[:n]
        else:
            pick = torch.randint(len(ends), (n,), generator=g, device=g.device)
        return ends[pick.to(ends.device)]

    return prior


def sample_quality_selector(constraint: Constraint, schedule: NoiseSchedule, dyn_cfg: DynamicsCfg,
                            score: Callable[[Tensor], float], n: int, *, handling: str = "landing",
                            prior: Optional[PriorFn] = None, seed: int = 0,
                            device: torch.device | str = "cpu") -> SelectFn:
    """``select`` for ``train_landing``: the model's own sampler, its kept samples scored (lower is better).

    The seed is fixed, so every validation point is scored on the same noise and the choice reflects the
    weights, not the draw. All-dropped samples score +inf (never chosen).
    """

    def select(model: ScoreModel) -> float:
        res = sample_landing(model, constraint, schedule, dyn_cfg, n, handling=handling, seed=seed, device=device,
                             prior=prior)
        x = res.x[~res.dropped]
        return float(score(x)) if len(x) > 1 else math.inf

    return select


Precision = Literal["fp32", "tf32", "bf16"]


def at_precision(model: ScoreModel, precision: Precision, device: torch.device) -> ScoreFn:
    """The score network at ``precision``; what the sampler does with its output (tangent projection, landing,
    Newton) stays in the samples' dtype, so the constraint residual does not inherit the network's rounding.

    bf16 runs the network under autocast (CUDA or CPU); tf32 lets CUDA matmuls use tensor cores for the
    network's calls only and restores the global flag after each call.
    """
    if precision == "fp32":
        return model
    if precision == "bf16":
        def bf16(x: Tensor, v: Optional[Tensor], k: int) -> Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out = model(x, v, k)
            return out.to(x.dtype)

        return bf16
    if precision == "tf32":
        if device.type != "cuda":
            raise ValueError(f"precision 'tf32' is a CUDA tensor-core mode; on {device.type} use 'fp32' or 'bf16'")

        def tf32(x: Tensor, v: Optional[Tensor], k: int) -> Tensor:
            before = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = True
            try:
                return model(x, v, k)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = before

        return tf32
    raise ValueError(f"precision must be fp32, tf32 or bf16, got {precision!r}")


def sample_landing(model: ScoreModel, constraint: Constraint, schedule: NoiseSchedule, dyn_cfg: DynamicsCfg,
                   n: int, handling: str = "landing", seed: int = 0, device: torch.device | str = "cpu",
                   batch_size: int = 100_000, prior: Optional[PriorFn] = None,
                   terminal_projection: bool = True, precision: Precision = "fp32") -> SampleResult:
    """Draw n samples in batches; ``handling`` switches landing (OLLA/ULLA) and projection (-P)."""
    device = torch.device(device)
    model = model.to(device).eval()
    score = at_precision(model, precision, device)
    dyn = dynamics_from(dyn_cfg, handling)
    if not terminal_projection:
        from dataclasses import replace

        dyn = replace(dyn, terminal_projection=False)
    gen = torch.Generator(device=device).manual_seed(seed)
    parts = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        x0 = prior(m, gen) if prior is not None else None
        parts.append(sample(score, constraint, schedule, dyn, m, generator=gen, device=device, x_init=x0))
    x = torch.cat([p.x for p in parts])
    return SampleResult(x=x, dropped=torch.cat([p.dropped for p in parts]), nfe=schedule.N,
                      newton_iters=torch.cat([p.newton_iters for p in parts]))
