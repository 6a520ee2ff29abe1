"""Plain-data checkpoints of dual-trained models (weights, config JSON, λ history): weights_only-safe."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from cdcore.checkpoint import load_checkpoint, save_checkpoint
from cdcore.config.dual import DualCfg
from cdcore.methods.dual.model import Denoiser
from cdcore.methods.dual.train import DualOutcome


CKPT_FORMAT = "cdcore-dual-v1"


def save_dual(path: str | Path, outcome: DualOutcome, cfg: DualCfg, meta: Optional[dict] = None) -> None:
    """Plain-data checkpoint (weights_only-safe): weights, config JSON, the λ history and the caller's ``meta``."""
    save_checkpoint(path, {
        "format": CKPT_FORMAT, "dim": int(outcome.model.dim), "cfg": cfg.model_dump_json(),
        "model": {k: v.detach().cpu() for k, v in outcome.model.state_dict().items()},
        "lambdas": torch.as_tensor(outcome.lambdas), "constraint_names": list(outcome.constraint_names),
        "meta": {"dim": int(outcome.model.dim), **(meta or {})},
    })


def load_dual(path: str | Path, device: torch.device | str = "cpu") -> tuple[Denoiser, DualCfg, dict]:
    state = load_checkpoint(path, map_location=device)
    if state.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path}: not a dual-training checkpoint (format {state.get('format')!r})")
    cfg = DualCfg.model_validate_json(state["cfg"])
    model = Denoiser(int(state["dim"]), cfg.model, cfg.schedule)
    model.load_state_dict(state["model"])
    meta = {**state.get("meta", {}), "lambdas": state["lambdas"].numpy(), "constraint_names": state["constraint_names"]}
    return model.to(device).eval(), cfg, meta
