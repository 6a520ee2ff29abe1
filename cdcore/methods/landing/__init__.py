"""Landing diffusion: path-NLL training (landing.md §1.5–1.6) and sampling.

Training simulates constrained forward paths from the data, caches them, and
fits s_θ by the Gaussian negative log-likelihood of each true forward step under
the tangent backward kernel. The loss is a sum over the N steps; each
optimiser step estimates it without bias from random (path, step) pairs,
N · mean_k, so a batch costs ``batch_size`` network calls instead of B·N.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional

import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel

from cdcore.config import DynamicsCfg, ModelCfg, ScheduleCfg, TrainCfg
from cdcore.constraints import Constraint
from cdcore.constraints.base import Parts
from cdcore.dynamics import DynamicsConfig, NoiseSchedule, PathResult, ScoreFn, forward_paths, sample, step_active
from cdcore.nets import ScoreModel
from cdcore.profiling import resolve_device  # noqa: F401  (re-exported: stages and benches import it from here)
from cdcore.checkpoint import load_checkpoint, save_checkpoint


from cdcore.methods.errors import DivergenceError  # noqa: E402,F401  (one error for every method)


def schedule_from(cfg: ScheduleCfg) -> NoiseSchedule:
    return NoiseSchedule(kind=cfg.kind, sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max, T=cfg.T, N=cfg.N)


def dynamics_from(cfg: DynamicsCfg, handling: str = "landing") -> DynamicsConfig:
    return DynamicsConfig(
        kind=cfg.kind,
        handling=handling,  # type: ignore[arg-type]
        landing=cfg.landing,
        alpha=cfg.alpha,
        gamma=cfg.gamma,
        newton_tol=cfg.newton_tol,
        newton_max_iter=cfg.newton_max_iter,
        terminal_landing_steps=cfg.terminal_landing_steps,
    )


def build_model(dim: int, schedule: NoiseSchedule, dyn: DynamicsCfg, model: ModelCfg, seed: int = 0) -> ScoreModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ScoreModel(dim, schedule, kind=dyn.kind, gamma=dyn.gamma, hidden=model.hidden,
                          depth=model.depth, time_features=model.time_features)


# ----- losses ---------------------------------------------------------------
Projector = Callable[[Tensor], Tensor]


def _projector(constraint: Constraint, x: Tensor, ambient: bool, active: Optional[Tensor] = None,
               parts: Optional[Parts] = None) -> Projector:
    """P(x)· with the geometry computed once (no gradient through it); identity for ambient diffusion.
    ``active`` overrides the inequality rows removed (see ``dynamics.step_active``). Without it, the sampler's
    own step geometry: a constraint with a closed-form tangent (SO(n)) is trained with the P it samples with,
    not a generic Jacobian-and-Cholesky one (so10_3w: 25 ms of a 34 ms training step on a 2-core CPU)."""
    if ambient:
        return lambda v: v
    with torch.no_grad():
        geo = constraint.step_geometry(x) if active is None else constraint.geometry(x, active, parts)
    return lambda v: constraint.tangent(x, v, geo)


def overdamped_step_loss(model: ScoreModel, constraint: Constraint, schedule: NoiseSchedule,
                         paths: Tensor, idx: Tensor, k: Tensor, ambient: bool = False) -> Tensor:
    """½‖P(x_{k+1})(x_k − x_{k+1} − ½σ_k²Δt s_θ(x_{k+1}, t_{k+1}))‖² / (σ_k²Δt) per (path, k)."""
    dt = schedule.dt
    sig = torch.tensor(schedule.sigmas(), device=paths.device, dtype=paths.dtype)[k].unsqueeze(1)
    x_k, x_k1 = paths[idx, k], paths[idx, k + 1]
    s = model(x_k1, None, k + 1)
    P = _projector(constraint, x_k1, ambient)
    r = P(x_k - x_k1 - 0.5 * sig**2 * dt * s) / (sig * math.sqrt(dt))
    return 0.5 * r.pow(2).sum(dim=1)


def underdamped_step_loss(model: ScoreModel, constraint: Constraint, schedule: NoiseSchedule, gamma: float,
                          paths: Tensor, idx: Tensor, k: Tensor, generator: Optional[torch.Generator] = None,
                          ambient: bool = False) -> Tensor:
    """Kinetic path loss (landing.md §1.6) with velocities reconstructed from positions."""
    N, dt = schedule.N, schedule.dt
    sigmas = torch.tensor(schedule.sigmas(), device=paths.device, dtype=paths.dtype)
    h = (sigmas[k] ** 2 * dt).unsqueeze(1)
    a = torch.exp(-gamma * h)
    x_k, x_k1 = paths[idx, k], paths[idx, k + 1]
    x_k2 = paths[idx, torch.clamp(k + 2, max=N)]
    h_next = (sigmas[torch.clamp(k + 1, max=N - 1)] ** 2 * dt).unsqueeze(1)
    # each P removes the rows active during the step it reads (x_k → x_{k+1} for the residual, x_{k+1} → x_{k+2}
    # for the velocity), as the sampler's velocity reconstruction does: a landing jump to g = −ε is not a speed
    with torch.no_grad():
        into, out_of = step_active(constraint, x_k, x_k1), step_active(constraint, x_k1, x_k2, at_start=True)
        # two active sets at one point: the constraint (the robot's forward kinematics) is evaluated once
        parts = None if ambient or into is None else constraint.parts(x_k1)
    P = _projector(constraint, x_k1, ambient, into, parts)
    P_v = P if into is None else _projector(constraint, x_k1, ambient, out_of, parts)
    with torch.no_grad():
        noise = torch.randn(x_k1.shape, generator=generator, device=x_k1.device, dtype=x_k1.dtype)
        v_raw = torch.where((k + 1 < N).unsqueeze(1), (x_k2 - x_k1) / h_next, noise)
        v_hat = P_v(v_raw)
    s = model(x_k1, v_hat, k + 1)
    mu = x_k1 - h * (a * v_hat + h * s)
    r = P(x_k - mu) / (torch.sqrt(1 - a * a) * h)
    return 0.5 * r.pow(2).sum(dim=1)


def path_loss_terms(model: ScoreModel, constraint: Constraint, schedule: NoiseSchedule, dyn: DynamicsConfig,
                    paths: Tensor, idx: Tensor, k: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    ambient = dyn.handling == "none"
    if dyn.kind == "overdamped":
        return overdamped_step_loss(model, constraint, schedule, paths, idx, k, ambient)
    return underdamped_step_loss(model, constraint, schedule, dyn.gamma, paths, idx, k, generator, ambient)


@torch.no_grad()
def full_path_loss(model: ScoreModel, constraint: Constraint, schedule: NoiseSchedule, dyn: DynamicsConfig,
                   paths: Tensor, seed: int = 0, chunk: int = 65536) -> float:
    """Exact Σ_k over every step of every path, averaged over paths (for validation)."""
    B, N = paths.shape[0], schedule.N
    idx = torch.arange(B, device=paths.device).repeat_interleave(N)
    k = torch.arange(N, device=paths.device).repeat(B)
    gen = torch.Generator(device=paths.device).manual_seed(seed)
    total = torch.zeros((), device=paths.device, dtype=paths.dtype)
    for s in range(0, len(idx), chunk):
        total = total + path_loss_terms(model, constraint, schedule, dyn, paths, idx[s:s + chunk], k[s:s + chunk], gen).sum()
    return float(total) / B


# ----- training -------------------------------------------------------------
@dataclass
class TrainOutcome:
    model: ScoreModel
    history: list[dict] = field(default_factory=list)
    resumed_from: int = 0
    wall_s: float = 0.0
    best_step: Optional[int] = None  # the validation point whose EMA weights were returned (``select``)


ProgressFn = Callable[[int, dict], None]
SelectFn = Callable[[ScoreModel], float]  # lower is better, e.g. a validation JSD of the model's samples


def _ema_with_warmup(decay: float) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """EMA whose decay ramps up as (1+n)/(10+n): short runs are not dominated by the initial weights."""

    def avg(avg_param: Tensor, param: Tensor, num_averaged: Tensor) -> Tensor:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        return d * avg_param + (1.0 - d) * param

    return avg


def _simulate(constraint: Constraint, x: Tensor, schedule: NoiseSchedule, dyn: DynamicsConfig, seed: int) -> Tensor:
    gen = torch.Generator(device=x.device).manual_seed(seed)
    res = forward_paths(constraint, x, schedule, dyn, generator=gen)
    if dyn.handling == "none":
        return res.paths
    keep = ~res.dropped
    if bool(res.dropped.any()):
        warnings.warn(f"{int(res.dropped.sum())} of {len(keep)} forward paths failed their terminal projection "
                      "and are left out of this refresh", RuntimeWarning, stacklevel=2)
    if not bool(keep.any()):
        raise DivergenceError("every forward path failed its terminal projection; check the constraint and the schedule")
    paths = res.paths[keep]
    if not bool(torch.isfinite(paths).all()):
        raise DivergenceError("forward paths contain NaN/Inf; lower sigma_max or alpha, or use implicit landing")
    return paths


def train_landing(
    constraint: Constraint,
    x_train: Tensor,
    x_val: Tensor,
    schedule: NoiseSchedule,
    dyn_cfg: DynamicsCfg,
    model_cfg: ModelCfg,
    cfg: TrainCfg,
    seed: int = 0,
    device: torch.device | str = "cpu",
    checkpoint_path: Optional[str | Path] = None,
    on_progress: Optional[ProgressFn] = None,
    handling: str = "landing",
    select: Optional[SelectFn] = None,
) -> TrainOutcome:
    """Fit s_θ on cached constrained forward paths; returns the EMA model.

    Every source of randomness is a function of (seed, step), so a run resumed
    from ``checkpoint_path`` ends with the same weights as an uninterrupted one.
    ``select`` scores the EMA model at every validation point (``val_every``) and the
    best-scoring weights are returned, as the release keeps its best-validation-JSD
    checkpoint: the path loss is a bound, not the sample quality, and need not fall with it.
    """
    device = torch.device(device)
    dyn = dynamics_from(dyn_cfg, handling)  # "none": the ambient (unconstrained) baseline, same loss with P = I
    x_train, x_val = x_train.to(device), x_val.to(device)
    model = build_model(constraint.dim, schedule, dyn_cfg, model_cfg, seed).to(device)
    ema = AveragedModel(model, avg_fn=_ema_with_warmup(cfg.ema))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    # cosine decay to 10 % of lr: the last steps average out minibatch noise
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    start, history = 0, []
    best: dict = {"score": math.inf, "step": None, "state": None}
    if checkpoint_path is not None and Path(checkpoint_path).exists():
        state = load_checkpoint(checkpoint_path)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, history = int(state["step"]), list(state["history"])
        best = dict(state.get("best", best))
    resumed_from = start
    val_paths = _simulate(constraint, x_val[: cfg.val_paths], schedule, dyn, seed=seed + 7919)
    paths = None
    t0 = time.perf_counter()
    log_every = max(1, cfg.steps // 20)
    running, n_acc = 0.0, 0
    for step in range(start, cfg.steps):
        if paths is None or step % cfg.refresh_every == 0:
            refresh = step // cfg.refresh_every
            paths = _simulate(constraint, x_train, schedule, dyn, seed=seed * 1_000_003 + refresh)
        gen = torch.Generator(device=device).manual_seed(seed * 7_777_777 + step)
        idx = torch.randint(0, paths.shape[0], (cfg.batch_size,), generator=gen, device=device)
        k = torch.randint(0, schedule.N, (cfg.batch_size,), generator=gen, device=device)
        loss = schedule.N * path_loss_terms(model, constraint, schedule, dyn, paths, idx, k, gen).mean()
        if not bool(torch.isfinite(loss)):
            where = f"; last good checkpoint kept at {checkpoint_path}" if checkpoint_path else ""
            raise DivergenceError(f"training loss is {float(loss)} at step {step}{where}. "
                                  "Lower train.lr or train.grad_clip, or check the data for outliers")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        ema.update_parameters(model)
        running += float(loss.detach())
        n_acc += 1
        done = step + 1
        validate = done % cfg.val_every == 0 or done == cfg.steps
        if done % log_every == 0 or validate:  # a validation point is never skipped for the log's cadence
            row = {"step": done, "loss": running / n_acc, "lr": opt.param_groups[0]["lr"]}
            running, n_acc = 0.0, 0
            if validate:
                row["val_loss"] = full_path_loss(ema.module, constraint, schedule, dyn, val_paths, seed=seed)
                if select is not None:
                    row["val_score"] = score = float(select(ema.module))
                    if not math.isfinite(score):
                        warnings.warn(f"validation score is {score} at step {done}; this point is not selectable",
                                      RuntimeWarning, stacklevel=2)
                    elif score < best["score"]:
                        best = {"score": score, "step": done,
                                "state": {k: v.detach().clone() for k, v in ema.module.state_dict().items()}}
            row["elapsed_s"] = time.perf_counter() - t0
            history.append(row)
            if on_progress:
                on_progress(done, row)
        if checkpoint_path is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            save_checkpoint(checkpoint_path, {
                "step": done, "model": model.state_dict(), "ema": ema.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "history": history,
                "best": best,
            })
    model_out = ema.module
    if best["state"] is not None:
        model_out.load_state_dict(best["state"])
    return TrainOutcome(model=model_out.eval(), history=history, resumed_from=resumed_from,
                        wall_s=time.perf_counter() - t0, best_step=best["step"])


# ----- sampling -------------------------------------------------------------
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
                   terminal_projection: bool = True, precision: Precision = "fp32") -> PathResult:
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
    return PathResult(x=x, dropped=torch.cat([p.dropped for p in parts]), nfe=schedule.N,
                      newton_iters=torch.cat([p.newton_iters for p in parts]))
