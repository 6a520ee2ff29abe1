"""From configuration to the objects of landing diffusion: the noise schedule, the dynamics switches and the
score network; back from a checkpoint; the data and samples files as landing reads and writes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cdcore.checkpoint import load_checkpoint
from cdcore.config import DynamicsCfg, ModelCfg, ScheduleCfg
from cdcore.data.io import read_dataset
from cdcore.dynamics import DynamicsConfig, NoiseSchedule, SampleResult
from cdcore.nets import ScoreModel


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


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[ScoreModel, NoiseSchedule, DynamicsCfg, dict]:
    """Rebuild a score model from a weights-only checkpoint (no pickled objects): (model, schedule, dynamics, meta)."""
    state = load_checkpoint(path, map_location=device)
    meta = state["meta"]
    sched_cfg, dyn_cfg = ScheduleCfg(**meta["schedule"]), DynamicsCfg(**meta["dynamics"])
    schedule = schedule_from(sched_cfg)
    model = build_model(meta["dim"], schedule, dyn_cfg, ModelCfg(**meta["model"]))
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval(), schedule, dyn_cfg, meta


def read_splits(path: str | Path, device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A data file's splits as float32 tensors on ``device``, and its attributes."""
    splits, attrs = read_dataset(path)
    return {k: torch.as_tensor(v, dtype=torch.float32, device=device) for k, v in splits.items()}, attrs


def samples_group(res: SampleResult, wall_s: float, peak_mem_mb: float, device: str) -> dict[str, Any]:
    """One sampler's result as a group of the samples file."""
    return {"x": res.x.float().cpu().numpy(), "dropped": res.dropped.cpu().numpy(), "nfe": res.nfe,
            "newton_iters_mean": float(res.newton_iters.float().mean()), "wall_s": wall_s,
            "peak_mem_mb": peak_mem_mb, "device": device}
