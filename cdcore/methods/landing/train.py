"""Training a landing score network on cached constrained forward paths, resumable and bit-identical after a
crash."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor

from cdcore.checkpoint import load_checkpoint, save_checkpoint
from cdcore.config import DynamicsCfg, ModelCfg, TrainCfg
from cdcore.constraints import Constraint
from cdcore.dynamics import DynamicsConfig, NoiseSchedule, forward_paths
from cdcore.methods.ema import EMA
from cdcore.methods.errors import DivergenceError, check_loss
from cdcore.methods.landing.io import build_model, dynamics_from
from cdcore.methods.landing.loss import full_path_loss, path_loss_terms
from cdcore.nets import ScoreModel


@dataclass
class TrainOutcome:
    model: ScoreModel
    history: list[dict] = field(default_factory=list)
    resumed_from: int = 0
    wall_s: float = 0.0
    best_step: Optional[int] = None  # the validation point whose EMA weights were returned (``select``)


ProgressFn = Callable[[int, dict], None]


SelectFn = Callable[[ScoreModel], float]  # lower is better, e.g. a validation JSD of the model's samples


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


def _optimiser(model: ScoreModel, cfg: TrainCfg) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam with cosine decay to 10 % of lr: the last steps average out minibatch noise."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    return opt, sched


def _best_of(select: SelectFn, ema_model: ScoreModel, done: int, best: dict, row: dict) -> dict:
    """Score the EMA weights at a validation point; keep them when they beat the best so far."""
    row["val_score"] = score = float(select(ema_model))
    if not math.isfinite(score):
        warnings.warn(f"validation score is {score} at step {done}; this point is not selectable",
                      RuntimeWarning, stacklevel=3)
    elif score < best["score"]:
        best = {"score": score, "step": done, "state": {k: v.detach().clone() for k, v in ema_model.state_dict().items()}}
    return best


def _step(model: ScoreModel, constraint: Constraint, schedule: NoiseSchedule, dyn: DynamicsConfig, paths: Tensor,
          cfg: TrainCfg, seed: int, step: int, opt: torch.optim.Optimizer, checkpoint_path: Optional[str | Path]) -> Tensor:
    """One optimiser step on N · mean_k of random (path, step) pairs, every draw a function of (seed, step)."""
    device = paths.device
    gen = torch.Generator(device=device).manual_seed(seed * 7_777_777 + step)
    idx = torch.randint(0, paths.shape[0], (cfg.batch_size,), generator=gen, device=device)
    k = torch.randint(0, schedule.N, (cfg.batch_size,), generator=gen, device=device)
    loss = schedule.N * path_loss_terms(model, constraint, schedule, dyn, paths, idx, k, gen).mean()
    if not bool(torch.isfinite(loss)):
        where = f"; last good checkpoint kept at {checkpoint_path}" if checkpoint_path else ""
        raise DivergenceError(f"training loss is {float(loss.detach())} at step {step}{where}. "
                              "Lower train.lr or train.grad_clip, or check the data for outliers")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return loss.detach()


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
    ema = EMA(model, cfg.ema)
    opt, sched = _optimiser(model, cfg)
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
    val_paths = _simulate(constraint, x_val[: cfg.val_paths], schedule, dyn, seed=seed + 7919)
    paths, t0, log_every = None, time.perf_counter(), max(1, cfg.steps // 20)
    running, n_acc = 0.0, 0
    for step in range(start, cfg.steps):
        if paths is None or step % cfg.refresh_every == 0:
            paths = _simulate(constraint, x_train, schedule, dyn, seed=seed * 1_000_003 + step // cfg.refresh_every)
        running += float(_step(model, constraint, schedule, dyn, paths, cfg, seed, step, opt, checkpoint_path))
        sched.step()
        ema.update(model, step)
        n_acc, done = n_acc + 1, step + 1
        validate = done % cfg.val_every == 0 or done == cfg.steps
        if done % log_every == 0 or validate:  # a validation point is never skipped for the log's cadence
            row = {"step": done, "loss": running / n_acc, "lr": opt.param_groups[0]["lr"]}
            check_loss(row["loss"], history[0]["loss"] if history else None, done,
                       "Lower train.lr or train.grad_clip, or check the data for outliers")
            running, n_acc = 0.0, 0
            if validate:
                row["val_loss"] = full_path_loss(ema.module, constraint, schedule, dyn, val_paths, seed=seed)
                if select is not None:
                    best = _best_of(select, ema.module, done, best, row)
            row["elapsed_s"] = time.perf_counter() - t0
            history.append(row)
            if on_progress:
                on_progress(done, row)
        if checkpoint_path is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            save_checkpoint(checkpoint_path, {
                "step": done, "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "history": history, "best": best})
    model_out = ema.module
    if best["state"] is not None:
        model_out.load_state_dict(best["state"])
    return TrainOutcome(model=model_out.eval(), history=history, resumed_from=start,
                        wall_s=time.perf_counter() - t0, best_step=best["step"])
