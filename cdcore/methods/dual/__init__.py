"""Constrained diffusion by dual training (Khalafi, Ding, Ribeiro, NeurIPS 2024; dual.md §1).

The problem  min KL(q‖p_θ)  s.t.  KL(q^i‖p_θ) ≤ b_i  is trained through DDPM
ε-prediction losses: each KL is bounded by the diffusion loss on a batch of its
*own* distribution (objective batch from the full biased data q, one batch per
constraint). Training alternates N primal AdamW steps on the Lagrangian
``L = loss_0 + Σ λ_i loss_i`` with one projected dual step
``λ ← [λ + η (loss_i − b̃_i − 2γλ_i)]₊`` (γ = 0: Alg. 2; γ > 0: the resilient
Alg. 3, whose fixed point with b̃ = 0 is λ = loss/(2γ)). Because every forward
process shares q(x_{1:T}|x_0), minimising the Lagrangian is ordinary training on
the mixture (q + Σ λ_i q^i)/(1 + Σλ) (Theorem 1); :func:`predicted_shares` turns
λ into the class shares that mixture predicts, and they are logged beside λ so
a classifier histogram can be held against them.

Public API (all typed, no tracking side effects; progress goes to a callback)::

    train_dual(data, cfg, seed, device, on_progress, init=None, checkpoint=None) -> DualOutcome
    train_finetune(x_new, teacher, cfg, seed, device, on_progress) -> DualOutcome
    sample_ddpm(model, n, seed, device, labels=None, cfg=None) -> Tensor (n, d) on CPU
    DualData.from_labelled(x, y, constraint_classes)   # fairness set-up
    oracle_lambdas(class_shares, constraint_classes)   # fixed-λ reweighting baseline
    save_dual(path, outcome, cfg) / load_dual(path, device)

Baselines share the code path: ``dual.mode="unconstrained"`` (λ ≡ 0; the
constraint losses are still measured and logged), ``"fixed"`` (λ from
:func:`oracle_lambdas`: per-class reweighting with oracle weights) and a
class-conditional denoiser (``model.num_classes > 0``) sampled with
:func:`uniform_labels`.

Fine-tuning (§1.4): the constraint is the distillation loss
E‖ε̂_pre(x_t,t) − ε̂_θ(x_t,t)‖² against a frozen pretrained model, with x_t
either pure noise (the paper's shortcut, ``source="noise"``) or the forward-noised
samples of the pretrained model (the faithful variant, ``source="samples"``).

The dual ascent is in-house (:class:`DualAscent`, ~30 lines) rather than
cooper-optim: the paper's loop (N primal steps, then one dual step that reuses
the batch losses already computed for the Lagrangian, plus the resilient term)
does not map onto cooper's ``roll`` without workarounds, and it adds a pinned
dependency for arithmetic that a unit test pins exactly.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Literal, Optional, Protocol, Sequence

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from cdcore.checkpoint import load_checkpoint, save_checkpoint
from cdcore.config import Strict
from cdcore.dynamics.schedules import DDPMCoefficients
from cdcore.dynamics.unconstrained import ddpm_ancestral
from cdcore.methods.errors import DivergenceError
from cdcore.config.dual import DDPMCfg, DenoiserCfg, DualAscentCfg, DualCfg, DualTrainCfg, SamplerCfg, ddpm_betas

CKPT_FORMAT = "cdcore-dual-v1"
TRAIN_CKPT_FORMAT = "cdcore-dual-train-v1"     # resumable training state, not a finished model


# ----- configuration ----------------------------------------------------------


# ----- DDPM model -------------------------------------------------------------
class Denoiser(nn.Module):
    """ε̂_θ(x_t, t[, y]): residual MLP with a sinusoidal t-embedding (and a label embedding).

    The DDPM schedule lives in non-persistent buffers so that the loss and the
    sampler read it from the model and cannot disagree.
    """

    def __init__(self, dim: int, model: DenoiserCfg, schedule: DDPMCfg) -> None:
        super().__init__()
        self.dim, self.num_classes, self.schedule_cfg = dim, model.num_classes, schedule
        H, k = model.hidden, model.time_features
        self.register_buffer("freqs", torch.exp(-math.log(10_000.0) * torch.arange(k) / k).float(), persistent=False)
        betas = ddpm_betas(schedule)
        abar = torch.cumprod(1 - betas, 0)
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("abar", abar.float(), persistent=False)
        self.inp = nn.Linear(dim, H)
        self.temb = nn.Sequential(nn.Linear(2 * k, H), nn.SiLU(), nn.Linear(H, H))
        self.yemb = nn.Embedding(model.num_classes, H) if model.num_classes else None
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(H), nn.SiLU(), nn.Linear(H, H), nn.SiLU(), nn.Linear(H, H))
            for _ in range(model.depth))
        self.out = nn.Sequential(nn.LayerNorm(H), nn.SiLU(), nn.Linear(H, dim))

    @property
    def T(self) -> int:
        return self.schedule_cfg.T

    def forward(self, x: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tensor:
        ang = t.to(x.dtype).unsqueeze(1) * self.freqs
        e = self.temb(torch.cat([torch.sin(ang), torch.cos(ang)], dim=1))
        if self.yemb is not None:
            if y is None:
                raise ValueError("this denoiser is class-conditional: pass labels y")
            e = e + self.yemb(y)
        h = self.inp(x) + e
        for blk in self.blocks:
            h = h + blk(h + e)
        return self.out(h)


def build_denoiser(dim: int, cfg: DualCfg, seed: int = 0) -> Denoiser:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Denoiser(dim, cfg.model, cfg.schedule)


def q_sample(model: Denoiser, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    ab = model.abar[t - 1].unsqueeze(1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


@dataclass
class Draw:
    """One batch of network inputs and regression targets: loss = mean ‖ε̂_θ(xt, t, y) − target‖² / d."""

    xt: Tensor
    t: Tensor
    y: Optional[Tensor]
    target: Tensor


def draw_eps(model: Denoiser, x0: Tensor, y: Optional[Tensor], gen: torch.Generator) -> Draw:
    """DDPM ε-regression batch: t ~ U{t_min..T}, ε ~ N(0, I), x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε."""
    B = x0.shape[0]
    t = torch.randint(model.schedule_cfg.t_min, model.T + 1, (B,), generator=gen, device=x0.device)
    eps = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
    return Draw(q_sample(model, x0, t, eps), t, y, eps)


def draw_losses(model: Denoiser, draws: Sequence[Draw]) -> Tensor:
    """Mean loss of each draw, from one network call over their concatenation (rows are independent)."""
    if not draws:
        return torch.zeros(0)
    y = None
    if model.num_classes:                    # an unconditional model ignores labels the data may carry
        ys = [d.y for d in draws]
        if any(v is None for v in ys):
            raise ValueError("a class-conditional model needs labels in every batch (objective and constraints)")
        y = torch.cat(ys)
    pred = model(torch.cat([d.xt for d in draws]), torch.cat([d.t for d in draws]), y)
    per = (pred - torch.cat([d.target for d in draws])).pow(2).mean(dim=1)
    return torch.stack([seg.mean() for seg in per.split([d.xt.shape[0] for d in draws])])


def eps_loss(model: Denoiser, x0: Tensor, y: Optional[Tensor], gen: torch.Generator) -> Tensor:
    """Per-sample ‖ε̂_θ(x_t,t) − ε‖² / d with t ~ U{t_min..T} (L_simple, dim-averaged as F.mse_loss)."""
    d = draw_eps(model, x0, y, gen)
    return (model(d.xt, d.t, d.y) - d.target).pow(2).mean(dim=1)


# ----- constraints --------------------------------------------------------------
class Constraint(Protocol):
    name: str
    cls: Optional[int]          # the class whose share this constraint adds to (None: not a class)
    size: Optional[int]         # data-set size for ratio-matched batches (None: use primal_batch)

    def to(self, device: torch.device) -> "Constraint": ...

    def draw(self, model: Denoiser, batch: int, gen: torch.Generator) -> Draw: ...


@dataclass
class DataConstraint:
    """KL(q^i‖p_θ) ≤ b_i through the diffusion loss on batches of q^i's own samples."""

    x: Tensor
    y: Optional[Tensor] = None
    name: str = "c"
    cls: Optional[int] = None

    @property
    def size(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device) -> "DataConstraint":
        return DataConstraint(self.x.to(device), None if self.y is None else self.y.to(device), self.name, self.cls)

    def draw(self, model: Denoiser, batch: int, gen: torch.Generator) -> Draw:
        idx = torch.randint(0, self.x.shape[0], (batch,), generator=gen, device=self.x.device)
        return draw_eps(model, self.x[idx], None if self.y is None else self.y[idx], gen)


@dataclass
class DistillConstraint:
    """KL(p_pre‖p_θ) ≤ b through E‖ε̂_pre(x_t,t) − ε̂_θ(x_t,t)‖² / d against a frozen teacher.

    ``x0=None``: x_t ~ N(0, I) at every t (the paper's shortcut); otherwise x_t is
    the forward-noised teacher sample x0[idx] (the faithful variant).
    """

    teacher: Denoiser
    x0: Optional[Tensor] = None
    name: str = "pretrained"
    cls: Optional[int] = None

    def __post_init__(self) -> None:
        self.teacher = self.teacher.eval().requires_grad_(False)

    @property
    def size(self) -> Optional[int]:
        return None

    def to(self, device: torch.device) -> "DistillConstraint":
        return DistillConstraint(self.teacher.to(device), None if self.x0 is None else self.x0.to(device),
                                 self.name, self.cls)

    def draw(self, model: Denoiser, batch: int, gen: torch.Generator) -> Draw:
        dev = self.teacher.betas.device
        t = torch.randint(model.schedule_cfg.t_min, model.T + 1, (batch,), generator=gen, device=dev)
        if self.x0 is None:
            xt = torch.randn((batch, model.dim), generator=gen, device=dev)
        else:
            idx = torch.randint(0, self.x0.shape[0], (batch,), generator=gen, device=dev)
            eps = torch.randn((batch, model.dim), generator=gen, device=dev)
            xt = q_sample(model, self.x0[idx], t, eps)
        with torch.no_grad():
            target = self.teacher(xt, t)
        return Draw(xt, t, None, target)


@dataclass
class DualData:
    """Objective data q (and labels for a conditional model) plus the constraints.

    ``class_shares`` (π_c in q) lets training log the class shares the λ-mixture predicts.
    """

    x: Tensor
    y: Optional[Tensor] = None
    constraints: list = field(default_factory=list)
    class_shares: Optional[np.ndarray] = None

    @classmethod
    def from_labelled(cls, x: np.ndarray | Tensor, y: np.ndarray | Tensor,
                      constraint_classes: Sequence[int], num_classes: Optional[int] = None) -> "DualData":
        """Fairness set-up: q = all of (x, y); constraint i = the samples of class constraint_classes[i]."""
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        y = torch.as_tensor(np.asarray(y), dtype=torch.long)
        K = int(num_classes if num_classes is not None else int(y.max()) + 1)
        cons = []
        for c in constraint_classes:
            m = y == c
            if not bool(m.any()):
                raise ValueError(f"constraint class {c} has no samples in the data")
            cons.append(DataConstraint(x[m], y[m], name=f"class{c}", cls=int(c)))
        shares = np.bincount(y.numpy(), minlength=K).astype(np.float64) / len(y)
        return cls(x=x, y=y, constraints=cons, class_shares=shares)


# ----- dual ascent ----------------------------------------------------------------
class DualAscent:
    """Projected dual ascent λ ← [λ + η (L − b̃ − 2γλ)]₊ ; γ > 0 is the resilient form."""

    def __init__(self, m: int, lr: float, resilience: float = 0.0, init: Optional[Sequence[float]] = None) -> None:
        self.lr, self.gamma = float(lr), float(resilience)
        self.lam = torch.zeros(m, dtype=torch.float64) if init is None else torch.tensor(init, dtype=torch.float64)
        if self.lam.shape != (m,) or bool((self.lam < 0).any()):
            raise ValueError(f"init must be {m} non-negative numbers, got {init}")

    def step(self, losses: Tensor | Sequence[float], thresholds: Tensor | Sequence[float]) -> Tensor:
        L = torch.as_tensor(losses, dtype=torch.float64)
        b = torch.as_tensor(thresholds, dtype=torch.float64)
        self.lam = torch.clamp(self.lam + self.lr * (L - b - 2.0 * self.gamma * self.lam), min=0.0)
        return self.lam.clone()

    def fixed_point(self, losses: Sequence[float], thresholds: Sequence[float]) -> Tensor:
        """λ* = [(L − b̃)/(2γ)]₊ for constant losses (resilient only)."""
        if self.gamma <= 0:
            raise ValueError("the plain update has no fixed point for constant losses; use resilience > 0")
        L = torch.as_tensor(losses, dtype=torch.float64)
        return torch.clamp((L - torch.as_tensor(thresholds, dtype=torch.float64)) / (2 * self.gamma), min=0.0)

    def state_dict(self) -> dict:
        return {"lam": self.lam.clone(), "lr": self.lr, "gamma": self.gamma}

    def load_state_dict(self, s: dict) -> None:
        self.lam, self.lr, self.gamma = s["lam"].clone().double(), float(s["lr"]), float(s["gamma"])


def mixture_weights(lam: Sequence[float] | np.ndarray) -> np.ndarray:
    """Weights of q^i in q_mix^(λ): λ_i / (1 + Σλ)."""
    lam = np.asarray(lam, dtype=np.float64)
    return lam / (1.0 + lam.sum())


def predicted_shares(class_shares: np.ndarray, constraint_classes: Sequence[Optional[int]],
                     lam: Sequence[float] | np.ndarray) -> np.ndarray:
    """Class shares of q_mix^(λ): w_c = (π_c + Σ_{i: class i = c} λ_i) / (1 + Σλ) (dual.md §1.2, §1.5).

    Constraints without a class (distillation) take their mass outside the classes.
    """
    pi = np.asarray(class_shares, dtype=np.float64).copy()
    lam = np.asarray(lam, dtype=np.float64)
    for c, l in zip(constraint_classes, lam):
        if c is not None:
            pi[c] += l
    return pi / (1.0 + lam.sum())


def oracle_lambdas(class_shares: np.ndarray, constraint_classes: Sequence[int],
                   target: Optional[np.ndarray] = None) -> list[float]:
    """Fixed λ whose mixture gives the constrained classes their target share (uniform by default).

    1 + Σλ is set so that the unconstrained classes keep their total target
    mass; λ_i = target_c (1 + Σλ) − π_c, clipped at 0 (a class already above
    target gets no extra weight). This is per-class loss reweighting with oracle
    weights, the baseline dual training is meant to match without knowing π.
    """
    pi = np.asarray(class_shares, dtype=np.float64)
    tgt = np.full(len(pi), 1.0 / len(pi)) if target is None else np.asarray(target, dtype=np.float64)
    cs = list(constraint_classes)
    if len(set(cs)) != len(cs):
        raise ValueError("oracle_lambdas expects one constraint per class")
    t_c, p_c = tgt[cs].sum(), pi[cs].sum()
    if t_c >= 1.0:
        raise ValueError("the constrained classes take the whole target mass; some class must stay unconstrained")
    scale = (1.0 - p_c) / (1.0 - t_c)
    return [float(max(tgt[c] * scale - pi[c], 0.0)) for c in cs]


def uniform_labels(n: int, num_classes: int, seed: int = 0) -> Tensor:
    """Balanced labels (counts differ by at most one), shuffled: the conditional baseline's sampling labels."""
    g = torch.Generator().manual_seed(seed)
    return (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]


# ----- training -------------------------------------------------------------------
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
    device = torch.device(device)
    tcfg, dcfg = cfg.train, cfg.dual
    cons = [c.to(device) for c in data.constraints]
    m = len(cons)
    x0 = data.x.to(device).float()
    y0 = None if data.y is None else data.y.to(device).long()
    if cfg.model.num_classes and y0 is None:
        raise ValueError("model.num_classes > 0 needs labels: DualData.y")
    if init is not None:
        model = copy.deepcopy(init).to(device).train().requires_grad_(True)
        if model.dim != x0.shape[1]:
            raise ValueError(f"init model has dim {model.dim}, data has {x0.shape[1]}")
    else:
        model = build_denoiser(int(x0.shape[1]), cfg, seed).to(device)
    b_fixed = _thresholds(dcfg, m)
    if dcfg.mode == "fixed":
        if len(dcfg.fixed_lambdas or []) != m:
            raise ValueError(f"dual.fixed_lambdas has {len(dcfg.fixed_lambdas or [])} values for {m} constraints")
        dual = DualAscent(m, dcfg.lr, dcfg.resilience, init=dcfg.fixed_lambdas)
    else:
        dual = DualAscent(m, dcfg.lr, dcfg.resilience)
    batches = _dual_batches(tcfg, int(x0.shape[0]), cons)
    seeds = _seeds(seed, m + 1)
    gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)

    def lr_factor(s: int) -> float:
        if s < tcfg.warmup:
            return (s + 1) / tcfg.warmup
        frac = (s - tcfg.warmup) / max(1, tcfg.steps - tcfg.warmup)
        return tcfg.lr_final + (1 - tcfg.lr_final) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    ema = copy.deepcopy(model).eval().requires_grad_(False) if tcfg.ema > 0 else None
    names = [c.name for c in cons]
    classes = [c.cls for c in cons]

    lam_hist = [dual.lam.numpy().copy()]
    loss_hist, b_hist, obj_hist, history = [], [], [], []
    acc_c = torch.zeros(m, device=device)
    acc_o = torch.zeros((), device=device)
    n_acc, obj_run = 0, None
    start, elapsed = 0, 0.0
    fp = _fingerprint(cfg, seed, x0, names, init)
    if checkpoint is not None and Path(checkpoint).exists():
        st = load_checkpoint(checkpoint)            # generator states must stay on the CPU
        if st.get("format") != TRAIN_CKPT_FORMAT:
            raise ValueError(f"{checkpoint}: not a dual-training checkpoint (format {st.get('format')!r}); "
                             "delete it or pass a different checkpoint path")
        if st.get("fingerprint") != fp:
            raise ValueError(f"{checkpoint}: checkpoint was written by another configuration, seed or data shape "
                             f"(fingerprint {str(st.get('fingerprint'))[:12]}, this run {fp[:12]}); "
                             "delete it to start afresh, or pass a different checkpoint path")
        model.load_state_dict(st["model"])
        if ema is not None:
            ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        dual.load_state_dict(st["dual"])
        for g, gs in zip(gens, st["generators"], strict=True):
            g.set_state(gs)
        lam_hist = [t.numpy().copy() for t in st["lam_hist"]]
        loss_hist = [t.numpy().copy() for t in st["loss_hist"]]
        b_hist = [t.numpy().copy() for t in st["b_hist"]]
        obj_hist, history = list(st["obj_hist"]), list(st["history"])
        acc_c.copy_(st["acc_c"])
        acc_o.copy_(st["acc_o"])
        n_acc, obj_run = int(st["n_acc"]), st["obj_run"]
        start, elapsed = int(st["step"]), float(st["elapsed_s"])
    t0 = time.perf_counter() - elapsed

    def train_state(step: int) -> dict:
        return {
            "format": TRAIN_CKPT_FORMAT, "fingerprint": fp, "step": step, "elapsed_s": time.perf_counter() - t0,
            "model": model.state_dict(), "ema": None if ema is None else ema.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "dual": dual.state_dict(),
            "generators": [g.get_state() for g in gens],
            "lam_hist": [torch.from_numpy(a) for a in lam_hist], "loss_hist": [torch.from_numpy(a) for a in loss_hist],
            "b_hist": [torch.from_numpy(a) for a in b_hist], "obj_hist": list(obj_hist), "history": list(history),
            "acc_c": acc_c.cpu(), "acc_o": acc_o.cpu(), "n_acc": n_acc, "obj_run": obj_run,
        }

    for step in range(start + 1, tcfg.steps + 1):
        lam_t = dual.lam.to(device=device, dtype=torch.float32)
        idx = torch.randint(0, x0.shape[0], (tcfg.primal_batch,), generator=gens[0], device=device)
        draws = [draw_eps(model, x0[idx], None if y0 is None else y0[idx], gens[0])]
        draws += [c.draw(model, b, g) for c, b, g in zip(cons, batches, gens[1:])]
        losses = draw_losses(model, draws)
        loss0, li = losses[0], losses[1:]
        lag = loss0 + (lam_t * li).sum()
        if not bool(torch.isfinite(lag)):
            where = f"; last good checkpoint kept at {checkpoint}" if checkpoint is not None else ""
            raise DivergenceError(f"Lagrangian is {float(lag.detach())} at step {step} "
                                  f"(λ = {dual.lam.tolist()}){where}. "
                                  "Lower train.lr or dual.lr, or raise dual.resilience")
        opt.zero_grad(set_to_none=True)
        lag.backward()
        nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            d = min(tcfg.ema, (1.0 + step) / (10.0 + step))   # warm-up: short runs are not stuck at init
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), model.parameters()):
                    pe.lerp_(p, 1.0 - d)
        acc_c += li.detach()
        acc_o += loss0.detach()
        n_acc += 1
        if step % dcfg.primal_per_dual == 0 or step == tcfg.steps:
            mean_c = (acc_c / n_acc).double().cpu()
            mean_o = float(acc_o) / n_acc
            obj_run = mean_o if obj_run is None else dcfg.threshold_ema * obj_run + (1 - dcfg.threshold_ema) * mean_o
            b = b_fixed * obj_run if dcfg.threshold_kind == "relative" else b_fixed
            if dcfg.mode == "dual" and step % dcfg.primal_per_dual == 0:
                dual.step(mean_c, b)
            lam_hist.append(dual.lam.numpy().copy())
            loss_hist.append(mean_c.numpy())
            b_hist.append(np.asarray(b, dtype=np.float64).copy())
            obj_hist.append(mean_o)
            acc_c.zero_()
            acc_o.zero_()
            n_acc = 0
        if on_progress is not None and (step % tcfg.log_every == 0 or step == tcfg.steps) and obj_hist:
            row = _progress_row(step, opt, obj_hist[-1], loss_hist[-1], b_hist[-1], lam_hist[-1], names, classes,
                                data.class_shares, time.perf_counter() - t0)
            history.append(row)
            on_progress(step, row)
        if checkpoint is not None and (step % tcfg.checkpoint_every == 0 or step == tcfg.steps):
            save_checkpoint(checkpoint, train_state(step))
    final = ema if ema is not None else model
    H = len(obj_hist)
    return DualOutcome(
        model=final.eval(), lambdas=np.stack(lam_hist),
        constraint_losses=np.asarray(loss_hist, dtype=np.float64).reshape(H, m),
        thresholds=np.asarray(b_hist, dtype=np.float64).reshape(H, m), objective=np.asarray(obj_hist),
        constraint_names=names, constraint_classes=classes, class_shares=data.class_shares, history=history,
        wall_s=time.perf_counter() - t0, resumed_from=start)


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


# ----- sampling -------------------------------------------------------------------
@torch.no_grad()
def sample_ddpm(model: Denoiser, n: int, seed: int = 0, device: torch.device | str = "cpu",
                labels: Optional[Tensor | np.ndarray] = None, cfg: Optional[SamplerCfg] = None) -> Tensor:
    """Ancestral DDPM sampling x_T ~ N(0,I) → x_0 from the model's own schedule; returns (n, d) on CPU.

    With ``cfg.clip`` the posterior mean is formed from the clipped x̂_0 (data in
    [−1, 1]); ``labels`` (length n) are required by, and only by, a conditional model.
    The model is moved to ``device`` (in place, as ``nn.Module.to`` does).
    """
    cfg = cfg or SamplerCfg()
    device = torch.device(device)
    was_training = model.training
    model = model.to(device).eval()
    if bool(model.num_classes) != (labels is not None):
        raise ValueError("labels must be given for a class-conditional model and only for one")
    y_all = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if y_all is not None and len(y_all) != n:
        raise ValueError(f"{len(y_all)} labels for {n} samples")
    # schedule coefficients as Python floats, read off the device once: the step loop never syncs with the host
    coef = DDPMCoefficients.of(model.betas, model.abar, cfg.variance)
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for s in range(0, n, cfg.batch_size):
        b = min(cfg.batch_size, n - s)
        y = None if y_all is None else y_all[s:s + b].to(device)
        x = torch.randn((b, model.dim), generator=gen, device=device)
        res = ddpm_ancestral(lambda xt, t: model(xt, t, y), x, coef, cfg.clip, generator=gen)
        if bool(res.dropped.any()):
            raise DivergenceError("DDPM sampling produced NaN/Inf; the model diverged or the schedule is broken")
        out.append(res.x.float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, model.dim))


# ----- checkpoints ----------------------------------------------------------------
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
