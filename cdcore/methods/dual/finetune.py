"""Fine-tuning without forgetting (dual.md §1.4): a pretrained DDPM fine-tuned on a class it never saw, with and
without the distillation constraint to its frozen self, and the threshold b̃ calibrated as the drift floor
(the distillation loss the same fine-tuning reaches on the teacher's own data). The reasoning behind the
threshold, and the benchmark that runs all of this over seeds, are in :mod:`cdcore.benchmarks.dual_finetune`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from cdcore.config.dual import FT_SCALES, SCALES, DualScale, FinetuneScale, finetune_cfg, pretrain_cfg
from cdcore.data.digits import DigitsSplit
from cdcore.methods.dual.evaluate import EvalClassifier, evaluate_digits
from cdcore.methods.dual.kl import DistillConstraint, DualData
from cdcore.methods.dual.model import Denoiser, q_sample
from cdcore.methods.dual.sample import sample_ddpm
from cdcore.methods.dual.train import DualOutcome, ProgressFn, train_dual
from cdcore.config.dual import DualAscentCfg, DualCfg

NEW_CLASS = 9


DUAL_LR_MAX = 100.0                      # DualAscentCfg.lr's bound


def resolve_scales(scale: str | DualScale, ft: Optional[FinetuneScale] = None) -> tuple[str, DualScale, FinetuneScale]:
    """(name, pretraining scale, fine-tuning scale); a custom DualScale gets fine-tuning at half its steps.

    ``ft`` given: those fine-tuning settings whatever the scale (the pipeline's ``finetune:`` entries).
    """
    if ft is not None:
        name, sc, _ = resolve_scales(scale)
        return name, sc, ft
    if isinstance(scale, str):
        if scale not in SCALES or scale not in FT_SCALES:
            raise KeyError(f"unknown scale {scale!r}; available: {', '.join(k for k in SCALES if k in FT_SCALES)}")
        return scale, SCALES[scale], FT_SCALES[scale]
    for name, sc in SCALES.items():
        if sc == scale and name in FT_SCALES:
            return name, scale, FT_SCALES[name]
    return "custom", scale, FinetuneScale(steps=max(1, scale.steps // 2), lr=scale.lr / 2,
                                          warmup=min(scale.warmup, max(1, scale.steps // 2)),
                                          teacher_samples=scale.n_samples)


def pretrain_teacher(split: DigitsSplit, scale: str | DualScale, seed: int = 0, device: torch.device | str = "cpu",
                     exclude: Sequence[int] = (NEW_CLASS,), on_progress: ProgressFn | None = None) -> Denoiser:
    """Unconstrained DDPM on the balanced train split minus the classes in ``exclude`` (not the biased set)."""
    _, sc, _ = resolve_scales(scale)
    keep = ~np.isin(split.y_train, list(exclude))
    if not keep.any():
        raise ValueError(f"excluding {list(exclude)} leaves no training digits")
    data = DualData(x=torch.as_tensor(split.x_train[keep], dtype=torch.float32))
    return train_dual(data, pretrain_cfg(sc), seed=seed, device=device, on_progress=on_progress).model


def teacher_samples(teacher: Denoiser, scale: str | DualScale, seed: int = 0,
                    device: torch.device | str = "cpu", *, ft: Optional[FinetuneScale] = None) -> Tensor:
    """The teacher's own samples that carry the distillation constraint (seeded apart from evaluation draws)."""
    _, sc, ft = resolve_scales(scale, ft)
    return sample_ddpm(teacher, ft.teacher_samples, seed=seed + 1, device=device, cfg=pretrain_cfg(sc).sampler)


def _tag(on_progress: ProgressFn | None, name: str) -> ProgressFn | None:
    if on_progress is None:
        return None
    return lambda step, row: on_progress(step, {**row, "variant": name})


def _finetune(x_obj: Tensor, teacher: Denoiser, x0: Tensor, cfg: DualCfg, seed: int, device: torch.device | str,
              on_progress: ProgressFn | None) -> DualOutcome:
    """train_finetune with the teacher samples given (so every run of one teacher shares them)."""
    con = DistillConstraint(copy.deepcopy(teacher), x0=x0)
    data = DualData(x=torch.as_tensor(np.asarray(x_obj), dtype=torch.float32), constraints=[con])
    return train_dual(data, cfg, seed=seed, device=device, on_progress=on_progress, init=teacher)


def tail_mean(values: np.ndarray, frac: float) -> float:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    k = max(1, math.ceil(frac * len(v)))
    return float(v[-k:].mean())


def drift_threshold(teacher: Denoiser, x_ref: np.ndarray | Tensor, teacher_x0: Tensor, scale: str | DualScale,
                    seed: int = 0, device: torch.device | str = "cpu",
                    on_progress: ProgressFn | None = None, *, ft: FinetuneScale | None = None) -> float:
    """b̃ = the distillation loss the same fine-tuning reaches when its objective is ``x_ref`` (the teacher's data).

    Same config, seed, steps and constraint draws (``teacher_x0``) as the real runs; the mean of the
    last ``drift_tail`` of the dual blocks (what the dual step compares with b̃).
    """
    _, sc, ft = resolve_scales(scale, ft)
    cfg = finetune_cfg(sc, ft, DualAscentCfg(mode="unconstrained"))
    x_ref = torch.as_tensor(np.asarray(x_ref), dtype=torch.float32)
    out = _finetune(x_ref, teacher, teacher_x0, cfg, seed, device, _tag(on_progress, "drift"))
    return tail_mean(out.constraint_losses[:, 0], ft.drift_tail)


def finetune_variants(teacher: Denoiser, x_new: np.ndarray | Tensor, scale: str | DualScale, seed: int = 0,
                      device: torch.device | str = "cpu", on_progress: ProgressFn | None = None,
                      *, x_ref: np.ndarray | Tensor | None = None, teacher_x0: Tensor | None = None,
                      threshold: float | None = None, ft: FinetuneScale | None = None) -> dict[str, DualOutcome]:
    """Fine-tune ``teacher`` on ``x_new`` unconstrained and constrained (same steps, lr, seed, objective draws).

    ``constrained``: dual mode, distillation constraint to the frozen teacher on its own noised
    samples (``teacher_x0``; drawn here when None), threshold b̃ = :func:`drift_threshold` on
    ``x_ref`` (the teacher's training data) unless ``threshold`` is given; with neither, the drift
    run fine-tunes on the teacher's own samples instead (a looser floor: they differ from its data), dual step ``eta / b̃`` (the normalised constraint L/b̃ − 1 ≤ 0).
    ``unconstrained``: λ ≡ 0, the distillation loss measured and logged only.
    ``on_progress(step, row)`` gets each variant's rows with ``row["variant"]`` set.
    The threshold used is ``outcomes["constrained"].thresholds[0, 0]``.
    """
    _, sc, ft = resolve_scales(scale, ft)
    x_new = torch.as_tensor(np.asarray(x_new), dtype=torch.float32)
    if teacher_x0 is None:
        teacher_x0 = teacher_samples(teacher, sc, seed, device, ft=ft)
    if threshold is None:
        ref = teacher_x0 if x_ref is None else x_ref
        threshold = drift_threshold(teacher, ref, teacher_x0, sc, seed, device, on_progress, ft=ft)
    if not (threshold > 0 and math.isfinite(threshold)):
        raise ValueError(f"threshold must be a positive finite loss, got {threshold}")
    dual_lr = min(DUAL_LR_MAX, ft.eta / threshold)
    cfgs = {
        "unconstrained": finetune_cfg(sc, ft, DualAscentCfg(mode="unconstrained")),
        "constrained": finetune_cfg(sc, ft, DualAscentCfg(mode="dual", threshold=float(threshold), lr=dual_lr,
                                                           primal_per_dual=ft.primal_per_dual)),
    }
    return {name: _finetune(x_new, teacher, teacher_x0, cfg, seed, device, _tag(on_progress, name))
            for name, cfg in cfgs.items()}


@torch.no_grad()
def distillation_loss(model: Denoiser, teacher: Denoiser, x0: Tensor, seed: int = 0, repeats: int = 4) -> float:
    """E_{x0 ∈ teacher samples, t ~ U{t_min..T}, ε} ‖ε̂_teacher − ε̂_model‖²/d on fixed draws (the constraint's loss)."""
    dev = teacher.betas.device
    model, x0 = model.to(dev).eval(), x0.to(dev)
    g = torch.Generator(device=dev).manual_seed(seed)
    tot = 0.0
    for _ in range(repeats):
        t = torch.randint(model.schedule_cfg.t_min, model.T + 1, (len(x0),), generator=g, device=dev)
        xt = q_sample(teacher, x0, t, torch.randn(x0.shape, generator=g, device=dev))
        tot += float((teacher(xt, t) - model(xt, t)).pow(2).mean())
    return tot / repeats


def evaluate_finetune(model: Denoiser, clf: EvalClassifier, split: DigitsSplit, n: int, seed: int = 0,
                      device: torch.device | str = "cpu", n_boot: int = 200, fd_repeats: int = 5) -> dict:
    """Sample ``n`` digits and measure them against the balanced test split.

    ``share_old`` / ``share_new``: confusion-corrected shares of digits 0–8 / 9 (they sum to 1; the
    samples the classifier does not recognise are excluded and given as ``low_conf_rate``), with
    bootstrap CIs; ``kl_uniform`` / ``tv_uniform`` of the corrected histogram; ``fd`` and ``fd_floor``
    (real train vs test at the same N); the full :func:`evaluate_digits` dict under ``"detail"``.
    """
    x = sample_ddpm(model, n, seed=seed + 1000, device=device)
    return evaluate_finetune_samples(x, clf, split, seed, n_boot=n_boot, fd_repeats=fd_repeats)


def evaluate_finetune_samples(x: np.ndarray | Tensor, clf: EvalClassifier, split: DigitsSplit, seed: int = 0,
                              n_boot: int = 200, fd_repeats: int = 5) -> dict:
    """:func:`evaluate_finetune` on given images (generated, or real ones as a check of the measurement)."""
    n = len(x)
    ev = evaluate_digits(x, clf, (split.x_test, split.y_test), split.x_train, minority=(NEW_CLASS,), seed=seed,
                         n_boot=n_boot, fd_repeats=fd_repeats)
    corr, raw = np.asarray(ev["hist_corrected"]), np.asarray(ev["hist_raw"])
    new_ci = ev["minority_share_corrected_ci"]
    return {
        "share_old": float(1.0 - corr[NEW_CLASS]), "share_new": float(corr[NEW_CLASS]),
        "share_old_ci": [float(1.0 - new_ci[1]), float(1.0 - new_ci[0])], "share_new_ci": [float(v) for v in new_ci],
        "share_new_raw": float(raw[NEW_CLASS]) if np.isfinite(raw).all() else float("nan"),
        "kl_uniform": ev["kl_uniform_corrected"], "tv_uniform": ev["tv_uniform_corrected"],
        "kl_uniform_ci": ev["kl_uniform_corrected_ci"],
        "fd": ev["fd"], "fd_std": ev["fd_std"], "fd_floor": ev["fd_floor"], "fd_n": ev["fd_n"],
        "low_conf_rate": ev["frac_low_conf"], "hist_corrected": corr.tolist(), "hist_raw": raw.tolist(),
        "near_copy_frac": ev["near_copy_frac"], "classifier_accuracy": ev["classifier_accuracy"],
        "n_samples": n, "detail": ev,
    }
