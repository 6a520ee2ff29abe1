"""NAMM's files: the image data set (flat NHWC rows), the mirror maps (g, f) and the sampler bundle (g, f and the
mirror-space score model), each a weights-only checkpoint that names its format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from cdcore import constraints
from cdcore.checkpoint import load_checkpoint, save_checkpoint
from cdcore.config.namm import NammCfg
from cdcore.constraints.images import ImageConstraint
from cdcore.data.io import DataError, read_dataset
from cdcore.data.images import ProblemData
from cdcore.dynamics.schedules import VPSDE
from cdcore.methods.namm.fit import build_nets
from cdcore.methods.namm.sample import sample_mdm
from cdcore.nets.images import ICNN, ScoreUNet

FORMAT = "cdcore-namm-v1"
SAMPLER_FORMAT = FORMAT + "-sampler"


def jsonable(v: Any) -> Any:
    """Plain JSON values (numpy scalars as numbers, anything else as its string)."""
    return json.loads(json.dumps(v, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def nhwc(flat: np.ndarray, shape: list[int]) -> np.ndarray:
    """Flat rows of the data file -> float32 images (N, H, W, C)."""
    return np.ascontiguousarray(flat.reshape(len(flat), *shape).astype(np.float32))


def flat_rows(x: Tensor) -> np.ndarray:
    """NCHW images -> the data file's flat NHWC rows (float32 numpy)."""
    return x.permute(0, 2, 3, 1).reshape(len(x), -1).float().cpu().numpy()


def problem_dataset(data: ProblemData, problem: str, n_train: int, n_val: int, seed: int,
                    fingerprint: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A generated problem as the splits and attributes of a data file (``fingerprint`` is recorded as given)."""
    n = len(data.x)
    flat = data.x.reshape(n, -1)
    splits = {"train": flat[:n_train], "val": flat[n_train:n_train + n_val], "test": flat[n_train + n_val:]}
    c = data.constraint
    attrs = {"constraint": problem, "constraint_kwargs": jsonable(c.init_kwargs()),
             "constraint_spec": jsonable(c.spec()), "dim": int(flat.shape[1]), "shape": list(data.shape),
             "method": "namm", "seed": seed, "generator": jsonable(data.params), "fingerprint": fingerprint,
             "generator_tol": float(data.tol), "max_distance": float(data.extra.get("max_distance", float("nan"))),
             "source": f"synthetic:namm:{problem}", "source_sha256": ""}
    return splits, attrs


def load_data(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any], ImageConstraint]:
    """A NAMM data file's splits, attributes and constraint (rebuilt from the recorded arguments)."""
    splits, attrs = read_dataset(path)
    if attrs.get("method") != "namm":
        raise DataError(f"{path}: not a NAMM data file (method {attrs.get('method')!r}); re-run `cdcore data`")
    return splits, attrs, constraints.make(attrs["constraint"], **attrs["constraint_kwargs"])


def save_mirror(path: str | Path, g: ICNN, f: nn.Module, cfg: NammCfg, meta: dict[str, Any]) -> None:
    save_checkpoint(path, {"format": FORMAT, "namm_cfg": cfg.model_dump_json(), "g": g.state_dict(),
                           "f": f.state_dict(), "meta": meta})


def _maps(state: dict[str, Any]) -> tuple[ICNN, nn.Module, NammCfg]:
    cfg = NammCfg.model_validate_json(state["namm_cfg"])
    g, f = build_nets(int(state["meta"]["shape"][2]), cfg)
    g.load_state_dict(state["g"])
    f.load_state_dict(state["f"])
    return g, f, cfg


def load_mirror(path: str | Path) -> tuple[ICNN, nn.Module, NammCfg, dict[str, Any]]:
    state = load_checkpoint(path)
    if state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a NAMM checkpoint (format {state.get('format')!r}); re-run `cdcore mirror`")
    g, f, cfg = _maps(state)
    return g.eval(), f.eval(), cfg, state["meta"]


def save_sampler(path: str | Path, g: ICNN, f: nn.Module, score: nn.Module, cfg: NammCfg,
                 meta: dict[str, Any]) -> None:
    save_checkpoint(path, {"format": SAMPLER_FORMAT, "namm_cfg": cfg.model_dump_json(), "g": g.state_dict(),
                           "f": f.state_dict(), "score": score.state_dict(), "meta": meta})


def load_sampler(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The registered bundle: {"g", "f", "score", "sde", "constraint", "meta"} (weights-only checkpoint)."""
    state = load_checkpoint(path, map_location="cpu")
    if state.get("format") != SAMPLER_FORMAT:
        raise ValueError(f"{path}: not a NAMM sampler (format {state.get('format')!r}); re-run `cdcore train`")
    meta = state["meta"]
    g, f, _ = _maps(state)
    net = ScoreUNet(int(meta["shape"][2]), nf=int(meta["nf"]), padding=meta.get("padding", "zeros"))
    net.load_state_dict(state["score"])
    return {"g": g.to(device).eval(), "f": f.to(device).eval(), "score": net.to(device).eval(),
            "sde": VPSDE(**meta["sde"]), "constraint": constraints.make(meta["problem"], **meta["constraint_kwargs"]),
            "meta": meta}


def draw(bundle: dict[str, Any], n: int, seed: int, steps: Optional[int] = None) -> Tensor:
    """n samples in the constrained space, NCHW: reverse SDE in mirror space, then x = f(ỹ)."""
    H, W, C = bundle["meta"]["shape"]
    _, x = sample_mdm(bundle["score"], (C, H, W), n, steps=steps or int(bundle["meta"]["sample_steps"]), seed=seed,
                      f=bundle["f"], sde=bundle["sde"])
    return x


def samples_group(x: Tensor, nfe: int, wall_s: float, peak_mem_mb: float, device: str) -> dict[str, Any]:
    """Samples as a group of the samples file: non-finite images are dropped (stored as zeros)."""
    flat = flat_rows(x)
    ok = np.isfinite(flat).all(axis=1)
    return {"x": np.where(ok[:, None], flat, 0.0), "dropped": ~ok, "nfe": nfe, "newton_iters_mean": 0.0,
            "wall_s": wall_s, "peak_mem_mb": peak_mem_mb, "device": device}
