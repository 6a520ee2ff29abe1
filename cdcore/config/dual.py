"""``method: dual``: its data sets, the pipeline's ``dual:`` and ``finetune:`` sections, the dual-training
configuration (:class:`DualCfg`), the scales of ``cdcore bench dual`` and the one translation from params to
a :class:`DualCfg` that the pipeline and the benchmarks share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Optional, Sequence

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor

from cdcore.config.common import Method, Strict

NUM_CLASSES = 10
NonNeg = Annotated[float, Field(ge=0, le=1e6)]


class DigitsDataset(Strict):
    """scikit-learn's 8×8 digits, made biased (minority classes kept at fraction ``rho``); ``method: dual``.

    ``minority`` are the classes given a KL constraint (empty: plain training); ``exclude`` drops classes from
    the training set altogether (the pretrained model of the fine-tuning experiment leaves out 9).
    The held-out test split is always balanced over all ten classes.
    """

    kind: Literal["digits"]
    method: Optional[Method] = Field(None, description="dual")
    rho: float = Field(0.1, gt=0, le=1, description="fraction of each minority class kept in the training set")
    minority: list[int] = Field(default_factory=lambda: [4, 5, 7], max_length=9)
    exclude: list[int] = Field(default_factory=list, max_length=9)
    test_fraction: float = Field(0.3, gt=0, lt=1)
    mode: Optional[Literal["dual", "unconstrained", "reweight"]] = Field(
        None, description="overrides dual.mode for this data set")
    train_steps: Optional[int] = Field(None, ge=1, le=10_000_000, description="overrides dual.steps")
    schedule: None = None
    dynamics: None = None

    @field_validator("minority", "exclude")
    @classmethod
    def _digits(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or any(c < 0 or c > 9 for c in v):
            raise ValueError(f"must be distinct digits 0-9, got {v}")
        return v

    @model_validator(mode="after")
    def _disjoint(self) -> "DigitsDataset":
        both = sorted(set(self.minority) & set(self.exclude))
        if both:
            raise ValueError(f"classes {both} are both minority and excluded; a constraint needs the class's data")
        return self

    @property
    def constraint(self) -> str:
        return "kl_classes" if self.minority else "none"


class DualPipelineCfg(Strict):
    """``method: dual`` settings (cdcore/methods/dual.py): the KL-constrained DDPM and its evaluation.

    The defaults are those of ``cdcore bench dual --scale ci``, where they were measured.
    """

    mode: Literal["dual", "unconstrained", "reweight"] = Field(
        "dual", description="dual: resilient primal-dual; reweight: fixed oracle λ (baseline); unconstrained")
    resilience: float = Field(0.5, ge=0, le=1e6, description="γ of the resilient dual update (fixed point λ = L/2γ)")
    dual_lr: float = Field(0.5, gt=0, le=100)
    primal_per_dual: int = Field(3, ge=1, le=100_000)
    steps: int = Field(1200, ge=1, le=10_000_000)
    hidden: int = Field(256, ge=8, le=8192)
    depth: int = Field(3, ge=1, le=32)
    T: int = Field(100, ge=2, le=4000, description="DDPM steps (training and sampling)")
    lr: float = Field(1e-3, gt=0, le=1)
    batch: int = Field(128, ge=1, le=1_000_000)
    n_samples: int = Field(1000, ge=10, le=10_000_000)
    classifier_epochs: int = Field(20, ge=1, le=10_000, description="evaluation CNN, trained on balanced real digits")
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @staticmethod
    def _abar_T(T: int) -> float:
        """ᾱ_T of the linear-β schedule (5e-4 … 0.1 over T steps) that cdcore.methods.dual.DDPMCfg defaults to."""
        out = 1.0
        for i in range(T):
            out *= 1 - (5e-4 + (0.1 - 5e-4) * i / max(T - 1, 1))
        return out

    @model_validator(mode="after")
    def _ends_in_noise(self) -> "DualPipelineCfg":
        if self._abar_T(self.T) > 0.01:
            least = next(t for t in range(self.T, 4001) if self._abar_T(t) <= 0.01)
            raise ValueError(f"dual.T = {self.T} leaves ᾱ_T = {self._abar_T(self.T):.3g} > 0.01, so x_T is not noise "
                             f"but sampling starts from N(0, I); set dual.T >= {least}")
        return self


class FinetuneExp(Strict):
    """Fine-tuning without forgetting (dual.md §1.4): start from a registered model, fine-tune on new classes.

    Both the distillation-constrained and the plain fine-tuning are run and compared; the constrained model is
    registered as ``<model_name>-<name>``.
    """

    source: str = Field(min_length=1, description="models:/<name>@<alias> (MLflow registry) or a folder models/<data set>")
    base: str = Field(min_length=1, description="the digits data set the pretrained model was trained on")
    new_class: Literal[9] = Field(9, description="the class the base data set excluded (the evaluation follows "
                                                 "dual.md §2.2 item 7, written for 9)")
    steps: int = Field(400, ge=1, le=10_000_000, description="primal steps of each fine-tuning run")
    lr: float = Field(5e-4, gt=0, le=1)
    teacher_samples: int = Field(1000, ge=10, le=10_000_000,
                                 description="pretrained-model samples that carry the distillation constraint")

    @field_validator("source")
    @classmethod
    def _uri(cls, v: str) -> str:
        if v.startswith("models:/") and "@" not in v and v.count("/") < 2:
            raise ValueError(f"{v!r}: a registry source is models:/<name>@<alias> or models:/<name>/<version>")
        return v




def ddpm_betas(cfg: "DDPMCfg") -> Tensor:
    return torch.linspace(cfg.beta_start, cfg.beta_end, cfg.T, dtype=torch.float64)


class DDPMCfg(Strict):
    """Linear-β DDPM schedule; t is 1-based, ᾱ_t = Π_{s≤t}(1 − β_s).

    The defaults are DDPM's (1e-4, 0.02 at T = 1000) rescaled by 1000/T to T = 200,
    so x_T is still ~N(0, I); a schedule with ᾱ_T > 0.01 is refused, since the
    sampler starts from pure noise (β up to 0.02 at T = 200 would leave ᾱ_T ≈ 0.13).
    """

    T: int = Field(200, ge=2, le=4000)
    beta_start: float = Field(5e-4, gt=0, lt=1)
    beta_end: float = Field(0.1, gt=0, lt=1)
    t_min: int = Field(2, ge=1, le=4000, description="training draws t ~ U{t_min..T}; the paper uses 2")

    @model_validator(mode="after")
    def _ordered(self) -> "DDPMCfg":
        if self.beta_end < self.beta_start:
            raise ValueError(f"beta_end ({self.beta_end}) must be >= beta_start ({self.beta_start})")
        if self.t_min > self.T:
            raise ValueError(f"t_min ({self.t_min}) must be <= T ({self.T})")
        abar_T = float(torch.prod(1 - ddpm_betas(self)))
        if abar_T > 0.01:
            raise ValueError(f"ᾱ_T = {abar_T:.3g} > 0.01: x_T is not noise, but sampling starts from N(0, I); "
                             "raise beta_end or T")
        return self


class DenoiserCfg(Strict):
    hidden: int = Field(256, ge=8, le=8192)
    depth: int = Field(3, ge=1, le=32, description="residual blocks")
    time_features: int = Field(32, ge=1, le=512, description="sinusoid pairs of the t-embedding")
    num_classes: int = Field(0, ge=0, le=100_000, description=">0: class-conditional ε-model (baseline)")


class DualTrainCfg(Strict):
    steps: int = Field(3000, ge=1, le=10_000_000, description="primal (AdamW) steps")
    primal_batch: int = Field(128, ge=1, le=1_000_000)
    dual_batch: Optional[int] = Field(None, ge=1, le=1_000_000,
                                      description="per-constraint batch; None: primal_batch·|D_i|/|D_q| (≥ min_dual_batch)")
    min_dual_batch: int = Field(8, ge=1, le=1_000_000)
    lr: float = Field(1e-3, gt=0, le=1)
    lr_final: float = Field(0.1, ge=0, le=1, description="cosine decay ends at lr·lr_final")
    warmup: int = Field(100, ge=0, le=1_000_000)
    weight_decay: float = Field(0.0, ge=0, le=10)
    grad_clip: float = Field(1.0, gt=0, le=1e6)
    ema: float = Field(0.999, ge=0, lt=1, description="0 disables; the EMA model is the one returned")
    log_every: int = Field(100, ge=1, le=10_000_000)
    checkpoint_every: int = Field(500, ge=1, le=10_000_000, description="steps between checkpoints")


class DualAscentCfg(Strict):
    mode: Literal["dual", "fixed", "unconstrained"] = "dual"
    lr: float = Field(0.5, gt=0, le=100, description="η_d, raw (not relative to the primal lr)")
    primal_per_dual: int = Field(3, ge=1, le=100_000, description="N primal steps per dual step")
    resilience: float = Field(0.0, ge=0, le=1e6, description="γ of the resilient update; 0 = Alg. 2")
    threshold: NonNeg | list[NonNeg] = Field(0.0, description="b̃_i (a scalar is used for every constraint)")
    threshold_kind: Literal["absolute", "relative"] = Field(
        "absolute", description="relative: b̃_i = threshold_i · running mean of the objective loss")
    threshold_ema: float = Field(0.9, ge=0, lt=1, description="per-dual-step EMA of the objective loss (relative)")
    fixed_lambdas: Optional[list[NonNeg]] = Field(None, description="λ for mode=fixed (reweighting baseline)")

    @model_validator(mode="after")
    def _fixed_needs_lambdas(self) -> "DualAscentCfg":
        if self.mode == "fixed" and self.fixed_lambdas is None:
            raise ValueError("mode 'fixed' needs fixed_lambdas (one per constraint; see oracle_lambdas)")
        return self


class FinetuneCfg(Strict):
    source: Literal["noise", "samples"] = Field(
        "samples", description="x_t of the distillation constraint: N(0,I) (paper shortcut) or noised teacher samples")
    teacher_samples: int = Field(2000, ge=1, le=10_000_000)
    init_from_teacher: bool = True


class SamplerCfg(Strict):
    variance: Literal["posterior", "beta"] = "posterior"
    clip: Optional[float] = Field(1.0, gt=0, le=1e6, description="clip predicted x_0 to ±clip; None: no clipping")
    batch_size: int = Field(4096, ge=1, le=10_000_000)


class DualCfg(Strict):
    schedule: DDPMCfg = DDPMCfg()
    model: DenoiserCfg = DenoiserCfg()
    train: DualTrainCfg = DualTrainCfg()
    dual: DualAscentCfg = DualAscentCfg()
    finetune: FinetuneCfg = FinetuneCfg()
    sampler: SamplerCfg = SamplerCfg()


VARIANTS = ("unconstrained", "dual", "dual-rel", "reweight", "conditional")


@dataclass(frozen=True)
class DualScale:
    """Everything a run size changes; the script builds one from its flags."""

    steps: int = 4000
    hidden: int = 256
    depth: int = 3
    T: int = 200
    lr: float = 1e-3
    warmup: int = 100
    batch: int = 128
    n_samples: int = 2000
    resilience: float = 1.0       # γ of the resilient dual update of "dual" (params.yaml dual.resilience)
    kappa: float = 1.0            # relative threshold of "dual-rel"
    dual_lr: float = 0.5
    primal_per_dual: int = 3
    rho: float = 0.1
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: tuple[str, ...] = ("unconstrained", "dual", "reweight", "conditional")
    clf_epochs: int = 40
    n_boot: int = 200
    fd_repeats: int = 5


SCALES: dict[str, DualScale] = {
    # seconds: for tests only, the numbers mean nothing
    "tiny": DualScale(steps=30, hidden=32, depth=1, T=100, warmup=5, n_samples=200, seeds=(0,),
                      variants=("unconstrained", "dual"), clf_epochs=2, n_boot=20, fd_repeats=1),
    # a few minutes on a 2-core CPU: 4 variants × 3 seeds. γ = 0.5: the resilient fixed point is λ = L/(2γ);
    # at γ = 1 λ settled at ~0.07 (so L ≈ 0.14), half the oracle λ ≈ 0.124 for a uniform mixture
    "ci": DualScale(steps=1200, hidden=256, depth=3, T=100, n_samples=1000, clf_epochs=20, resilience=0.5),
    # the script's defaults, every variant, 5 seeds (a GPU)
    "paper": DualScale(steps=4000, hidden=256, depth=3, T=200, n_samples=2000, seeds=(0, 1, 2, 3, 4), resilience=0.5,
                       variants=VARIANTS, clf_epochs=40),
}


def variant_cfg(name: str, scale: DualScale, fixed_lambdas: Optional[Sequence[float]] = None) -> DualCfg:
    """The :class:`DualCfg` of one variant at one scale; ``reweight`` takes its fixed λ (the oracle's:
    :func:`cdcore.methods.dual.oracle_lambdas`)."""
    if name not in VARIANTS:
        raise KeyError(f"unknown variant {name!r}; available: {', '.join(VARIANTS)}")
    if (name == "reweight") != (fixed_lambdas is not None):
        raise ValueError(f"variant {name!r}: fixed_lambdas are given for, and only for, the reweight variant")
    base = DualCfg(
        schedule=DDPMCfg(T=scale.T),
        model=DenoiserCfg(hidden=scale.hidden, depth=scale.depth, num_classes=NUM_CLASSES if name == "conditional" else 0),
        train=DualTrainCfg(steps=scale.steps, primal_batch=scale.batch, lr=scale.lr, warmup=min(scale.warmup, scale.steps),
                           ema=0.999, log_every=max(1, scale.steps // 10)),
    )
    dual = {
        "unconstrained": lambda: DualAscentCfg(mode="unconstrained"),
        "conditional": lambda: DualAscentCfg(mode="unconstrained"),
        "dual": lambda: DualAscentCfg(mode="dual", resilience=scale.resilience, lr=scale.dual_lr,
                                      primal_per_dual=scale.primal_per_dual),
        "dual-rel": lambda: DualAscentCfg(mode="dual", threshold=scale.kappa, threshold_kind="relative",
                                          lr=scale.dual_lr, primal_per_dual=scale.primal_per_dual),
        "reweight": lambda: DualAscentCfg(mode="fixed", fixed_lambdas=list(fixed_lambdas or [])),
    }[name]()
    return base.model_copy(update={"dual": dual})


@dataclass(frozen=True)
class FinetuneScale:
    """Fine-tuning settings of one scale (pretraining uses the :class:`DualScale` of the same name)."""

    steps: int = 400                     # primal steps of every fine-tuning run (both variants, and the drift run)
    lr: float = 5e-4                     # peak AdamW lr (cosine decay, as pretraining)
    warmup: int = 50
    teacher_samples: int = 1000          # teacher samples that carry the distillation constraint
    eta: float = 0.05                    # dual step on the normalised constraint L/b̃ − 1 (raw lr = eta / b̃)
    primal_per_dual: int = 3
    drift_tail: float = 0.2              # b̃ = mean drift loss over this last fraction of the dual blocks


FT_SCALES: dict[str, FinetuneScale] = {
    # seconds: for tests only, the numbers mean nothing
    "tiny": FinetuneScale(steps=60, warmup=5, teacher_samples=200),
    # ~1 min per seed on a 2-core CPU at one thread: classifier, pretraining (1200 steps), 1000 teacher samples,
    # three 400-step fine-tunes (drift, unconstrained, constrained), three evaluations of 1000 samples.
    # λ has settled by ~60 % of the 400 steps (seed 0: 3.5-3.6 over the last 40 %)
    "ci": FinetuneScale(steps=400, lr=5e-4, warmup=50, teacher_samples=1000),
    "paper": FinetuneScale(steps=2000, lr=5e-4, warmup=100, teacher_samples=5000),
}


def pretrain_cfg(sc: DualScale) -> DualCfg:
    return variant_cfg("unconstrained", sc)


def finetune_cfg(sc: DualScale, ft: FinetuneScale, dual: DualAscentCfg) -> DualCfg:
    base = pretrain_cfg(sc)
    train = base.train.model_copy(update={"steps": ft.steps, "lr": ft.lr, "warmup": min(ft.warmup, ft.steps),
                                          "log_every": max(1, ft.steps // 10)})
    return base.model_copy(update={"train": train, "dual": dual,
                                   "finetune": FinetuneCfg(source="samples", teacher_samples=ft.teacher_samples)})


# ----- params.yaml -> DualCfg: the pipeline's translation ----------------------------------------------------
def scale_of(params, name: str) -> DualScale:
    """The :class:`DualScale` of a digits data set: the ``dual:`` section with the data set's overrides."""
    d, ds = params.dual, params.dataset(name)
    return DualScale(steps=ds.train_steps or d.steps, hidden=d.hidden, depth=d.depth, T=d.T, lr=d.lr,
                     warmup=min(100, ds.train_steps or d.steps), batch=d.batch, n_samples=d.n_samples,
                     resilience=d.resilience, dual_lr=d.dual_lr, primal_per_dual=d.primal_per_dual, rho=ds.rho,
                     seeds=(params.seed,), clf_epochs=d.classifier_epochs)


def mode_of(params, name: str) -> str:
    """The variant a digits data set trains: unconstrained without minority classes, else its mode."""
    ds = params.dataset(name)
    return "unconstrained" if not ds.minority else (ds.mode or params.dual.mode)


def dual_cfg(params, name: str, fixed_lambdas: Optional[Sequence[float]] = None) -> DualCfg:
    """The :class:`DualCfg` a digits data set trains with (``fixed_lambdas``: the reweight mode's oracle λ)."""
    return variant_cfg(mode_of(params, name), scale_of(params, name), fixed_lambdas)


def finetune_scales(params, exp: FinetuneExp) -> tuple[DualScale, FinetuneScale]:
    """(pretraining scale of the ``dual:`` section, fine-tuning settings of one ``finetune:`` entry)."""
    from dataclasses import replace

    d = params.dual
    sc = DualScale(steps=d.steps, hidden=d.hidden, depth=d.depth, T=d.T, lr=d.lr, batch=d.batch, n_samples=d.n_samples,
                   seeds=(params.seed,), clf_epochs=d.classifier_epochs)
    ft = replace(FT_SCALES["ci"], steps=exp.steps, lr=exp.lr, warmup=min(FT_SCALES["ci"].warmup, exp.steps),
                 teacher_samples=exp.teacher_samples)
    return sc, ft
