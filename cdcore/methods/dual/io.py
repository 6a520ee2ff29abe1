"""Plain-data checkpoints of dual-trained models (weights, config JSON, λ history): weights_only-safe; and the
digits data file of the pipeline read back."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from cdcore.checkpoint import load_checkpoint, save_checkpoint
from cdcore.config.dual import DualCfg
from cdcore.data.digits import DigitsSplit
from cdcore.data.errors import DataError
from cdcore.data.io import read_dataset, read_labels
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


def load_digits_file(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """A digits data file's splits, labels and attributes; another method's file is refused."""
    splits, attrs = read_dataset(path)
    if attrs.get("method") != "dual":
        raise DataError(f"{path}: not a digits data file (method {attrs.get('method')!r}); re-run `cdcore data`")
    return splits, read_labels(path), attrs


def digits_split_of(path: str | Path, seed: int) -> tuple[DigitsSplit, dict[str, np.ndarray], dict[str, Any]]:
    """A digits data file as a :class:`DigitsSplit`: its training set, the balanced real digits and the test split."""
    splits, labels, attrs = load_digits_file(path)
    split = DigitsSplit(x_train=splits["val"], y_train=labels["val"], x_test=splits["test"], y_test=labels["test"],
                        x_biased=splits["train"], y_biased=labels["train"], minority=tuple(attrs["minority"]),
                        rho=float(attrs["rho"]), seed=seed)
    return split, labels, attrs
