"""From configuration to the objects of landing diffusion: the noise schedule, the dynamics switches and the
score network."""

from __future__ import annotations


import torch

from cdcore.config import DynamicsCfg, ModelCfg, ScheduleCfg
from cdcore.dynamics import DynamicsConfig, NoiseSchedule
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
