"""Primal–dual training on the Lagrangian L = loss_0 + Σ λ_i loss_i (dual.md §1.3, Alg. 2 and 3), resumable
bit for bit, and fine-tuning with a distillation constraint (§1.4)."""

from __future__ import annotations

import copy
import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor, nn

from cdcore.checkpoint import load_checkpoint, save_checkpoint
from cdcore.config.dual import DualAscentCfg, DualCfg, DualTrainCfg
from cdcore.methods.ema import EMA
from cdcore.methods.errors import DivergenceError, check_loss
from cdcore.methods.dual.model import Denoiser, build_denoiser, draw_eps, draw_losses
from cdcore.methods.dual.kl import DualData, DistillConstraint
from cdcore.methods.dual.ascent import DualAscent, mixture_weights, predicted_shares
from cdcore.methods.dual.sample import sample_ddpm


TRAIN_CKPT_FORMAT = "cdcore-dual-train-v1"     # resumable training state, not a finished model


ProgressFn = Callable[[int, dict], None]


@dataclass
class DualOutcome:
    model: Denoiser                     # the EMA model when train.ema > 0
    lambdas: np.ndarray                 # (H + 1, m): λ at start and after each block of N primal steps
    constraint_losses: np.ndarray       # (H, m): mean batch loss_i over each block (what the dual step used)
    thresholds: np.ndarray              # (H, m): b̃_i used at each dual step
    objective: np.ndarray               # (H,): mean batch loss_0
    constraint_names: list[str]
    constraint_classes: list[Optional[int]]
    class_shares: Optional[np.ndarray]
    history: list[dict] = field(default_factory=list)   # the rows sent to on_progress
    wall_s: float = 0.0
    resumed_from: int = 0               # step of the checkpoint training resumed from (0: fresh start)

    @property
    def final_lambdas(self) -> np.ndarray:
        return self.lambdas[-1]

    @property
    def mixture(self) -> np.ndarray:
        return mixture_weights(self.final_lambdas)

    @property
    def predicted_class_shares(self) -> Optional[np.ndarray]:
        if self.class_shares is None:
            return None
        return predicted_shares(self.class_shares, self.constraint_classes, self.final_lambdas)


def _dual_batches(cfg: DualTrainCfg, n_obj: int, constraints: list) -> list[int]:
    out = []
    for c in constraints:
        if cfg.dual_batch is not None:
            out.append(cfg.dual_batch)
        elif c.size is None:
            out.append(cfg.primal_batch)
        else:
            out.append(max(cfg.min_dual_batch, int(round(cfg.primal_batch * c.size / n_obj))))
    return out


def _thresholds(cfg: DualAscentCfg, m: int) -> np.ndarray:
    if isinstance(cfg.threshold, list):
        if len(cfg.threshold) != m:
            raise ValueError(f"dual.threshold has {len(cfg.threshold)} values for {m} constraints")
        return np.asarray(cfg.threshold, dtype=np.float64)
    return np.full(m, float(cfg.threshold))


def _seeds(seed: int, n: int) -> list[int]:
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


def _fingerprint(cfg: DualCfg, seed: int, x0: Tensor, names: list[str], init: Optional[Denoiser]) -> str:
    """What a resumed run must share with the one that wrote the checkpoint (checkpoint_every does not matter)."""
    key = [cfg.model_dump_json(exclude={"train": {"checkpoint_every"}}), int(seed), list(x0.shape), names,
           init is not None]
    return hashlib.sha256(repr(key).encode()).hexdigest()


def _lr_factor(tcfg: DualTrainCfg) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to lr·lr_final."""
    def factor(s: int) -> float:
        if s < tcfg.warmup:
            return (s + 1) / tcfg.warmup
        frac = (s - tcfg.warmup) / max(1, tcfg.steps - tcfg.warmup)
        return tcfg.lr_final + (1 - tcfg.lr_final) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))

    return factor


def _start_model(x0: Tensor, cfg: DualCfg, seed: int, device: torch.device, init: Optional[Denoiser]) -> Denoiser:
    if init is None:
        return build_denoiser(int(x0.shape[1]), cfg, seed).to(device)
    model = copy.deepcopy(init).to(device).train().requires_grad_(True)
    if model.dim != x0.shape[1]:
        raise ValueError(f"init model has dim {model.dim}, data has {x0.shape[1]}")
    return model


def _dual_ascent(dcfg: DualAscentCfg, m: int) -> DualAscent:
    if dcfg.mode != "fixed":
        return DualAscent(m, dcfg.lr, dcfg.resilience)
    if len(dcfg.fixed_lambdas or []) != m:
        raise ValueError(f"dual.fixed_lambdas has {len(dcfg.fixed_lambdas or [])} values for {m} constraints")
    return DualAscent(m, dcfg.lr, dcfg.resilience, init=dcfg.fixed_lambdas)


class _Loop:
    """Everything the primal–dual loop reads, so that a checkpoint of it resumes the run bit for bit."""

    _ARRAYS = ("lam_hist", "loss_hist", "b_hist")

    def __init__(self, data: DualData, cfg: DualCfg, seed: int, device: torch.device, init: Optional[Denoiser]):
        self.cfg, self.tcfg, self.dcfg = cfg, cfg.train, cfg.dual
        self.cons = [c.to(device) for c in data.constraints]
        self.m = len(self.cons)
        self.x0 = data.x.to(device).float()
        self.y0 = None if data.y is None else data.y.to(device).long()
        if cfg.model.num_classes and self.y0 is None:
            raise ValueError("model.num_classes > 0 needs labels: DualData.y")
        self.model = _start_model(self.x0, cfg, seed, device, init)
        self.b_fixed = _thresholds(self.dcfg, self.m)
        self.dual = _dual_ascent(self.dcfg, self.m)
        self.batches = _dual_batches(self.tcfg, int(self.x0.shape[0]), self.cons)
        self.gens = [torch.Generator(device=device).manual_seed(s) for s in _seeds(seed, self.m + 1)]
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.tcfg.lr, weight_decay=self.tcfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_factor(self.tcfg))
        self.ema = EMA(self.model, self.tcfg.ema) if self.tcfg.ema > 0 else None
        self.names, self.classes = [c.name for c in self.cons], [c.cls for c in self.cons]
        self.lam_hist = [self.dual.lam.numpy().copy()]
        self.loss_hist, self.b_hist, self.obj_hist, self.history = [], [], [], []
        self.acc_c, self.acc_o = torch.zeros(self.m, device=device), torch.zeros((), device=device)
        self.n_acc, self.obj_run, self.start, self.elapsed = 0, None, 0, 0.0
        self.fp = _fingerprint(cfg, seed, self.x0, self.names, init)

    def state(self, step: int, elapsed: float) -> dict:
        return {
            "format": TRAIN_CKPT_FORMAT, "fingerprint": self.fp, "step": step, "elapsed_s": elapsed,
            "model": self.model.state_dict(), "ema": None if self.ema is None else self.ema.state_dict(),
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "dual": self.dual.state_dict(),
            "generators": [g.get_state() for g in self.gens],
            **{k: [torch.from_numpy(a) for a in getattr(self, k)] for k in self._ARRAYS},
            "obj_hist": list(self.obj_hist), "history": list(self.history),
            "acc_c": self.acc_c.cpu(), "acc_o": self.acc_o.cpu(), "n_acc": self.n_acc, "obj_run": self.obj_run,
        }

    def resume(self, checkpoint: Path) -> None:
        st = load_checkpoint(checkpoint)            # generator states must stay on the CPU
        if st.get("format") != TRAIN_CKPT_FORMAT:
            raise ValueError(f"{checkpoint}: not a dual-training checkpoint (format {st.get('format')!r}); "
                             "delete it or pass a different checkpoint path")
        if st.get("fingerprint") != self.fp:
            raise ValueError(f"{checkpoint}: checkpoint was written by another configuration, seed or data shape "
                             f"(fingerprint {str(st.get('fingerprint'))[:12]}, this run {self.fp[:12]}); "
                             "delete it to start afresh, or pass a different checkpoint path")
        self.model.load_state_dict(st["model"])
        if self.ema is not None:
            self.ema.load_state_dict(st["ema"])
        self.opt.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        self.dual.load_state_dict(st["dual"])
        for g, gs in zip(self.gens, st["generators"], strict=True):
            g.set_state(gs)
        for k in self._ARRAYS:
            setattr(self, k, [t.numpy().copy() for t in st[k]])
        self.obj_hist, self.history = list(st["obj_hist"]), list(st["history"])
        self.acc_c.copy_(st["acc_c"])
        self.acc_o.copy_(st["acc_o"])
        self.n_acc, self.obj_run = int(st["n_acc"]), st["obj_run"]
        self.start, self.elapsed = int(st["step"]), float(st["elapsed_s"])

    def primal_step(self, step: int, checkpoint: Optional[str | Path]) -> None:
        """One AdamW step on the Lagrangian, the EMA, and the block's loss accumulators."""
        model, device = self.model, self.x0.device
        lam_t = self.dual.lam.to(device=device, dtype=torch.float32)
        idx = torch.randint(0, self.x0.shape[0], (self.tcfg.primal_batch,), generator=self.gens[0], device=device)
        draws = [draw_eps(model, self.x0[idx], None if self.y0 is None else self.y0[idx], self.gens[0])]
        draws += [c.draw(model, b, g) for c, b, g in zip(self.cons, self.batches, self.gens[1:])]
        losses = draw_losses(model, draws)
        loss0, li = losses[0], losses[1:]
        lag = loss0 + (lam_t * li).sum()
        if not bool(torch.isfinite(lag)):
            where = f"; last good checkpoint kept at {checkpoint}" if checkpoint is not None else ""
            raise DivergenceError(f"Lagrangian is {float(lag.detach())} at step {step} "
                                  f"(λ = {self.dual.lam.tolist()}){where}. "
                                  "Lower train.lr or dual.lr, or raise dual.resilience")
        self.opt.zero_grad(set_to_none=True)
        lag.backward()
        nn.utils.clip_grad_norm_(model.parameters(), self.tcfg.grad_clip)
        self.opt.step()
        self.sched.step()
        if self.ema is not None:
            self.ema.update(model, step)   # dual's warm-up counts from 1: its calibrated runs stay bit for bit
        self.acc_c += li.detach()
        self.acc_o += loss0.detach()
        self.n_acc += 1

    def end_block(self, step: int) -> None:
        """Close a block of primal steps: the dual step on the block's mean losses (dual mode), the records."""
        dcfg = self.dcfg
        mean_c = (self.acc_c / self.n_acc).double().cpu()
        mean_o = float(self.acc_o) / self.n_acc
        self.obj_run = mean_o if self.obj_run is None else \
            dcfg.threshold_ema * self.obj_run + (1 - dcfg.threshold_ema) * mean_o
        b = self.b_fixed * self.obj_run if dcfg.threshold_kind == "relative" else self.b_fixed
        if dcfg.mode == "dual" and step % dcfg.primal_per_dual == 0:
            self.dual.step(mean_c, b)
        self.lam_hist.append(self.dual.lam.numpy().copy())
        self.loss_hist.append(mean_c.numpy())
        self.b_hist.append(np.asarray(b, dtype=np.float64).copy())
        self.obj_hist.append(mean_o)
        self.acc_c.zero_()
        self.acc_o.zero_()
        self.n_acc = 0

    def outcome(self, class_shares: Optional[np.ndarray], wall_s: float) -> DualOutcome:
        final = self.ema.module if self.ema is not None else self.model
        H, m = len(self.obj_hist), self.m
        return DualOutcome(
            model=final.eval(), lambdas=np.stack(self.lam_hist),
            constraint_losses=np.asarray(self.loss_hist, dtype=np.float64).reshape(H, m),
            thresholds=np.asarray(self.b_hist, dtype=np.float64).reshape(H, m), objective=np.asarray(self.obj_hist),
            constraint_names=self.names, constraint_classes=self.classes, class_shares=class_shares,
            history=self.history, wall_s=wall_s, resumed_from=self.start)


def train_dual(data: DualData, cfg: DualCfg, seed: int = 0, device: torch.device | str = "cpu",
               on_progress: Optional[ProgressFn] = None, init: Optional[Denoiser] = None,
               checkpoint: Optional[str | Path] = None) -> DualOutcome:
    """Train ε_θ by primal–dual steps on the Lagrangian; every mode shares this loop.

    Each data stream (objective, constraint i) has its own generator, so adding
    constraints with λ ≡ 0 leaves the objective's draws, and hence θ, unchanged.
    The dual step uses the mean of the N batch losses already computed for the
    Lagrangian (no extra forward passes). ``init`` starts from a copy of that model.

    ``checkpoint`` holds everything the loop reads (weights, EMA, optimiser,
    schedule, λ, generator states, the partial dual block), saved every
    ``train.checkpoint_every`` steps and resumed from when the file exists, so an
    interrupted run ends bit-identical to an uninterrupted one. A checkpoint of
    another config, seed or data shape is refused rather than silently mixed in.
    """
    loop = _Loop(data, cfg, seed, torch.device(device), init)
    tcfg = cfg.train
    if checkpoint is not None and Path(checkpoint).exists():
        loop.resume(Path(checkpoint))
    t0 = time.perf_counter() - loop.elapsed
    for step in range(loop.start + 1, tcfg.steps + 1):
        loop.primal_step(step, checkpoint)
        if step % cfg.dual.primal_per_dual == 0 or step == tcfg.steps:
            loop.end_block(step)
        if on_progress is not None and (step % tcfg.log_every == 0 or step == tcfg.steps) and loop.obj_hist:
            row = _progress_row(step, loop.opt, loop.obj_hist[-1], loop.loss_hist[-1], loop.b_hist[-1],
                                loop.lam_hist[-1], loop.names, loop.classes, data.class_shares,
                                time.perf_counter() - t0)
            check_loss(row["loss_objective"], loop.history[0]["loss_objective"] if loop.history else None, step,
                       "Lower dual.lr, or dual.dual_lr if λ grows without bound")
            loop.history.append(row)
            on_progress(step, row)
        if checkpoint is not None and (step % tcfg.checkpoint_every == 0 or step == tcfg.steps):
            save_checkpoint(checkpoint, loop.state(step, time.perf_counter() - t0))
    return loop.outcome(data.class_shares, time.perf_counter() - t0)


def _progress_row(step: int, opt: torch.optim.Optimizer, obj: float, losses: np.ndarray, b: np.ndarray,
                  lam: np.ndarray, names: list[str], classes: list[Optional[int]],
                  class_shares: Optional[np.ndarray], elapsed: float) -> dict:
    row: dict = {"step": step, "lr": opt.param_groups[0]["lr"], "loss_objective": obj, "elapsed_s": elapsed}
    mix = mixture_weights(lam)
    for i, n in enumerate(names):
        row[f"lambda/{n}"] = float(lam[i])
        row[f"loss/{n}"] = float(losses[i])
        row[f"threshold/{n}"] = float(b[i])
        row[f"slack/{n}"] = float(losses[i] - b[i])
        row[f"mixture/{n}"] = float(mix[i])
    if class_shares is not None:
        for c, w in enumerate(predicted_shares(class_shares, classes, lam)):
            row[f"share_pred/{c}"] = float(w)
    return row


def train_finetune(x_new: np.ndarray | Tensor, teacher: Denoiser, cfg: DualCfg, seed: int = 0,
                   device: torch.device | str = "cpu", on_progress: Optional[ProgressFn] = None) -> DualOutcome:
    """§1.4: objective = new data, one constraint = distillation to the frozen ``teacher``.

    ``cfg.finetune.source="samples"`` draws ``teacher_samples`` from the teacher
    first (its own ancestral samples, noised again inside the loss);
    ``"noise"`` is the paper's pure-noise shortcut. With ``dual.mode="unconstrained"``
    this is plain fine-tuning (the distillation loss is still logged).
    """
    device = torch.device(device)
    ft = cfg.finetune
    if teacher.num_classes:
        raise ValueError("fine-tuning expects an unconditional teacher")
    x0 = None
    if ft.source == "samples":
        x0 = sample_ddpm(teacher, ft.teacher_samples, seed=seed + 1, device=device, cfg=cfg.sampler)
    con = DistillConstraint(copy.deepcopy(teacher), x0=x0)
    data = DualData(x=torch.as_tensor(np.asarray(x_new), dtype=torch.float32), constraints=[con])
    return train_dual(data, cfg, seed=seed, device=device, on_progress=on_progress,
                      init=teacher if ft.init_from_teacher else None)
