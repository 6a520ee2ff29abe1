"""``method: landing``: its data sets, dynamics, network, training, sampling and evaluation settings, and the
released settings of the landing benchmark suite (landing.md §1.7), whose loaders and metrics are code in
:mod:`cdcore.benchmarks.suite`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, Optional

from pydantic import Field, field_validator

from cdcore.config.common import Method, ScheduleCfg, Strict

# the constraint library's names (cdcore.constraints.library; a test pins the two lists equal)
LIBRARY_CONSTRAINTS = ("ball", "bumpy_sphere", "box", "burgers", "count", "dipeptide", "kolmogorov", "periodic_texture",
                       "polytope", "robot", "robot_arm", "simplex", "so10", "son", "sphere", "tangle_cube",
                       "torus", "total_brightness")


class VmfDataset(Strict):
    """Synthetic mixture of von Mises–Fisher distributions on S², made from the seed alone."""

    kind: Literal["vmf"]
    method: Optional[Method] = Field(None, description="landing (the only method for points on a manifold)")
    constraint: Literal["sphere"] = "sphere"
    n: int = Field(4000, ge=20, le=10_000_000, description="number of points before the split")
    components: int = Field(4, ge=1, le=64)
    kappa: float = Field(20.0, gt=0, le=1e5, description="concentration of each component")
    train_steps: int | None = Field(None, ge=1, le=10_000_000, description="overrides train.steps for this data set")
    schedule: Optional["ScheduleCfg"] = None
    dynamics: Optional["DynamicsCfg"] = None


class FileDataset(Strict):
    """User data: a CSV of latitude/longitude in degrees, or an array of points (.npy / HDF5)."""

    kind: Literal["file"]
    method: Optional[Method] = Field(None, description="landing (the only method for points on a manifold)")
    path: str = Field(min_length=1, description="relative to the project folder, and inside it")
    outside_project: bool = Field(False, description="true: `path` may lie outside the project folder (opt-in)")
    format: Literal["auto", "latlon_csv", "npy", "h5"] = "auto"
    constraint: str = "sphere"
    tolerance: float = Field(1e-4, gt=0, le=1.0, description="largest constraint violation accepted in the file")
    train_steps: int | None = Field(None, ge=1, le=10_000_000, description="overrides train.steps for this data set")
    schedule: Optional["ScheduleCfg"] = None
    dynamics: Optional["DynamicsCfg"] = None

    @field_validator("constraint")
    @classmethod
    def _known_constraint(cls, v: str) -> str:
        if v not in LIBRARY_CONSTRAINTS:
            raise ValueError(f"unknown constraint {v!r}; available: {', '.join(LIBRARY_CONSTRAINTS)}")
        return v


class BenchmarkDataset(Strict):
    """A problem of the landing benchmark suite (cdcore/benchmarks/suite.py): its data, constraint and metric.

    Its schedule and dynamics default to the benchmark's released overdamped settings; give
    ``schedule`` / ``dynamics`` here to override them.
    """

    kind: Literal["benchmark"]
    method: Optional[Method] = Field(None, description="landing (the only method for points on a manifold)")
    benchmark: str
    train_steps: int | None = Field(None, ge=1, le=10_000_000, description="overrides train.steps for this data set")
    schedule: Optional["ScheduleCfg"] = None
    dynamics: Optional["DynamicsCfg"] = None
    prior: Optional[Literal["analytic", "forward"]] = Field(
        None, description="where sampling starts: the constraint's closed-form prior, or the forward chain's end "
        "simulated from the training split (the release's start where its forward does not mix); default: the "
        "benchmark's own")

    @field_validator("benchmark")
    @classmethod
    def _known_benchmark(cls, v: str) -> str:
        if v not in BENCHMARK_SETTINGS:
            raise ValueError(f"unknown benchmark {v!r}; available: {', '.join(BENCHMARK_SETTINGS)}")
        return v

    @property
    def constraint(self) -> str:
        return BENCHMARK_SETTINGS[self.benchmark].constraint

    @property
    def constraint_kwargs(self) -> dict:
        """The benchmark's constructor arguments of its constraint (e.g. a ball's dimension, SO(10)'s tangent mode)."""
        return dict(BENCHMARK_SETTINGS[self.benchmark].constraint_kwargs)


class DynamicsCfg(Strict):
    kind: Literal["overdamped", "underdamped"] = "overdamped"
    landing: Literal["explicit", "implicit"] = "implicit"
    alpha: float = Field(50.0, gt=0, le=1e6, description="landing rate")
    gamma: float = Field(5.0, gt=0, le=1e4, description="friction of underdamped dynamics")
    newton_tol: float = Field(1e-5, gt=0, le=1e-1)
    newton_max_iter: int = Field(30, ge=1, le=1000)
    terminal_landing_steps: int = Field(5, ge=0, le=100, description="full-rate landing steps before the terminal "
                                        "Newton projection, on samples still off the set (0: none)")


class ModelCfg(Strict):
    hidden: int = Field(256, ge=8, le=8192)
    depth: int = Field(4, ge=1, le=32)
    time_features: int = Field(16, ge=0, le=512)


class TrainCfg(Strict):
    steps: int = Field(3000, ge=1, le=10_000_000)
    batch_size: int = Field(512, ge=1, le=1_000_000)
    lr: float = Field(2e-3, gt=0, le=1)
    ema: float = Field(0.999, ge=0, lt=1)
    grad_clip: float = Field(10.0, gt=0)
    refresh_every: int = Field(500, ge=1, description="steps between re-simulating the cached forward paths")
    val_every: int = Field(500, ge=1)
    val_paths: int = Field(256, ge=1)
    checkpoint_every: int = Field(500, ge=1, description="steps between resumable checkpoints")
    select: Literal["last", "best_val"] = Field(
        "last", description="weights kept: the last EMA ones, or those whose landing samples score best on the "
                            "validation split in the data set's metric at a validation point (the release's "
                            "best-validation-JSD checkpoint)")
    select_samples: int = Field(1000, ge=2, le=10_000_000, description="landing samples scored per validation point")
    device: Literal["auto", "cpu", "cuda"] = "auto"


class SampleCfg(Strict):
    n_samples: int = Field(4000, ge=1, le=100_000_000)
    samplers: list[Literal["landing", "projection"]] = Field(default_factory=lambda: ["landing", "projection"], min_length=1)
    batch_size: int = Field(100_000, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("samplers")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"samplers must not repeat, got {v}")
        return v


class EvaluateCfg(Strict):
    bins: int = Field(30, ge=2, le=1000, description="(lat, lon) histogram bins per axis")
    feasibility_tol: float = Field(1e-5, gt=0, description="largest violation a sample may have")


@dataclass(frozen=True)
class Scale:
    n_samples: int
    train_steps: int
    hidden: int
    depth: int
    batch_size: int = 512
    max_train: int = 1_000_000  # cap on the training points whose forward paths are cached
    refreshes: int = 4  # times the cached forward paths are re-simulated during training
    lr: float = 2e-3  # Adam's; the release's common value (SO(10) 3w 5e-4, robot 3e-3 at paper scale)
    # validation points at which the EMA model's samples are scored on the validation split; the best is kept
    # (the release's best-validation-JSD checkpoint). 1: the final model, no sampling during training.
    selections: int = 1


@dataclass(frozen=True)
class BenchmarkSettings:
    """The released hyper-parameters of one landing benchmark (landing.md §1.7), adapted where the problem is a
    synthetic stand-in; its loader and metric are code (:mod:`cdcore.benchmarks.suite`)."""

    name: str
    constraint: str
    constraint_kwargs: dict
    od_schedule: ScheduleCfg
    od_dynamics: DynamicsCfg
    ud_schedule: ScheduleCfg
    ud_dynamics: DynamicsCfg
    scales: dict[str, Scale] = field(default_factory=dict)
    metric_name: str = "jsd"
    # "analytic": the constraint's sample_prior; "forward": the forward chain's end simulated from the training
    # split (cdcore.methods.landing.forward_end_prior), the release's start where its forward does not mix.
    prior: Literal["analytic", "forward"] = "analytic"

    def model_cfg(self, scale: str) -> ModelCfg:
        s = self.scales[scale]
        return ModelCfg(hidden=s.hidden, depth=s.depth, time_features=16)

    def train_cfg(self, scale: str) -> TrainCfg:
        s = self.scales[scale]
        return TrainCfg(steps=s.train_steps, batch_size=s.batch_size, lr=s.lr, refresh_every=max(1, s.train_steps // s.refreshes),
                        val_every=max(1, s.train_steps // s.selections), val_paths=64, checkpoint_every=s.train_steps)



POLYTOPE_KW = {"dim": 2, "n_faces": 4, "seed": 0}


BENCHMARK_SETTINGS: dict[str, BenchmarkSettings] = {}


def _add(b: "BenchmarkSettings") -> None:
    BENCHMARK_SETTINGS[b.name] = b


_small = {"ci": Scale(n_samples=1000, train_steps=600, hidden=128, depth=3, max_train=2048, refreshes=1),
          "paper": Scale(n_samples=100_000, train_steps=20_000, hidden=512, depth=5, batch_size=2048, selections=10)}
_big = {"ci": Scale(n_samples=500, train_steps=400, hidden=128, depth=3, max_train=256, refreshes=1),
        "paper": Scale(n_samples=10_000, train_steps=20_000, hidden=1024, depth=5, batch_size=2048, selections=10)}
# earth and SO(10) carry the underdamped target (ULLA at half NFE reaches OLLA's JSD): at 600 / 400 steps their
# ci models were far from converged (earth OLLA JSD 0.60 → 0.48 at 2400 steps → 0.39 at 12000 with 6 path refreshes,
# floor 0.24; so10_circle 0.38 → 0.18 at 1600), so the comparison measured training speed more than the samplers.
# An earth model trains 12000 steps in about 50 s on 2 CPU cores; an SO(10) one 1600 steps in about 70 s.
_earth = {"ci": replace(_small["ci"], train_steps=12000, refreshes=6), "paper": _small["paper"]}
# SO(10) at ci caches the paths of every training point (1600 so10_circle, 3200 mixtures; the generic big-data cap is
# 256): so10_circle's data are one curve, and its kinetic model, whose input carries the next step's velocity,
# fitted 256 points' paths and left the curve (validation path loss 1030 → 1023 with all points, ULLA JSD
# 0.456 → 0.373 on the validation split over three sampling seeds; OLLA 0.165 → 0.173). The mixtures did not care
# (so10_3w ULLA 0.191 → 0.189). Simulating 1600–3200 paths on SO(10) with the closed-form steps takes seconds.
_so10_scales = {"ci": replace(_big["ci"], train_steps=1600, refreshes=4, max_train=4096), "paper": _big["paper"]}
# The robot's kinetic model was the limit at 300 steps: ULLA samples moved from their forward-end start without
# reaching the data (PCA-histogram JSD 0.69 at the start → 0.71; validation path loss 5977), 1200 steps 0.58 (5042),
# 2400 steps 0.50 (4598), against OLLA 0.48 and a train-vs-test floor of 0.45. Both dynamics train 2400 steps.
_robot = {"ci": Scale(n_samples=64, train_steps=2400, hidden=128, depth=3, batch_size=256, max_train=96, refreshes=1),
          "paper": Scale(n_samples=10_000, train_steps=20_000, hidden=1024, depth=5, batch_size=2048, lr=3e-3,
                         selections=10)}

_add(BenchmarkSettings(
    "earth", "sphere", {},
    ScheduleCfg(kind="linear", sigma_min=0.01, sigma_max=1.0, T=4.0, N=100),
    DynamicsCfg(kind="overdamped", landing="implicit", alpha=50.0),
    ScheduleCfg(kind="linear", sigma_min=0.1, sigma_max=2.0, T=2.0, N=50),
    DynamicsCfg(kind="underdamped", landing="implicit", alpha=50.0, gamma=5.0),
    _earth))
_so10 = dict(
    od_schedule=ScheduleCfg(kind="geometric", sigma_min=0.2, sigma_max=2.0, T=1.0, N=100),
    od_dynamics=DynamicsCfg(kind="overdamped", landing="explicit", alpha=50.0),
    ud_schedule=ScheduleCfg(kind="geometric", sigma_min=0.2, sigma_max=2.0, T=2.5, N=50),
    ud_dynamics=DynamicsCfg(kind="underdamped", landing="explicit", alpha=15.0, gamma=10.0),
    scales=_so10_scales)
# SO(10) with the closed-form tangent ½(U − R Uᵀ R) and landing normal −½(R Rᵀ − I)R (``tangent_mode="manifold"``,
# as the official code): exact on SO(n), first-order off it, where landing keeps the iterates (residual ≤ 1e-5
# after the terminal projection either way). The Gram mode (exact anywhere) solves a 55×55 system twice per
# step: OLLA 5.74 s → 0.21 s on so10_circle at ci (2-core CPU), JSD 0.410 → 0.379. The Newton projection of the
# -P baselines is the generic one in both modes (its tangent step uses the closed form too).
_SO10_KW = {"tangent_mode": "manifold"}
_add(BenchmarkSettings("so10_3w", "so10", _SO10_KW,
                       **{**_so10, "scales": {**_so10_scales, "paper": replace(_so10_scales["paper"], lr=5e-4)}}))
# SO10_5w: the release trains its overdamped model with a linear schedule (the 3w one is geometric). Its ULLA-P
# runs γ 5 in the release; ours samples the ULLA model (γ 10), so that -P and landing share one network.
_add(BenchmarkSettings("so10_5w", "so10", _SO10_KW,
                       **{**_so10, "od_schedule": ScheduleCfg(kind="linear", sigma_min=0.2, sigma_max=2.0, T=1.0, N=100)}))
_add(BenchmarkSettings("so10_circle", "so10", _SO10_KW, **_so10))
for _surface in ("torus", "tangle_cube", "bumpy_sphere"):
    _add(BenchmarkSettings(
        _surface, _surface, {},
        ScheduleCfg(kind="linear", sigma_min=0.05, sigma_max=1.0, T=2.0, N=100),
        DynamicsCfg(kind="overdamped", landing="implicit", alpha=25.0),
        ScheduleCfg(kind="linear", sigma_min=0.2, sigma_max=1.5, T=2.0, N=30),
        DynamicsCfg(kind="underdamped", landing="implicit", alpha=25.0, gamma=20.0),
        {**_small, "paper": replace(_small["paper"], hidden=256)}))  # the release's SDF net: MLP 5×256
# Dipeptide and robot: the released horizons (T 0.1 / 0.2) perturb the data rather than mix it, so no closed-form
# law is the forward's end (the analytic priors sat 0.59 / 0.83 from it, and the robot's ULLA samples never left
# theirs). Like the release, their samplers start from the forward's end simulated from the training split. The
# release runs both dynamics at N 100 here (one `N` in its configs); the half-NFE target is earth's and SO(10)'s.
_add(BenchmarkSettings(
    "dipeptide", "dipeptide", {},
    ScheduleCfg(kind="constant", sigma_min=1.0, sigma_max=1.0, T=0.1, N=100),
    DynamicsCfg(kind="overdamped", landing="implicit", alpha=75.0),
    ScheduleCfg(kind="linear", sigma_min=0.5, sigma_max=2.0, T=0.2, N=100),
    DynamicsCfg(kind="underdamped", landing="explicit", alpha=50.0, gamma=10.0),
    _big, prior="forward"))
_add(BenchmarkSettings(
    "robot_arm", "robot_arm", {},
    ScheduleCfg(kind="linear", sigma_min=0.1, sigma_max=3.0, T=0.1, N=100),
    DynamicsCfg(kind="overdamped", landing="explicit", alpha=50.0),
    ScheduleCfg(kind="linear", sigma_min=0.1, sigma_max=2.0, T=0.2, N=100),
    DynamicsCfg(kind="underdamped", landing="explicit", alpha=200.0, gamma=1.0),
    _robot, prior="forward"))
# The convex suites (MDM's ball, simplex and hypercube, and a random polytope). Their underdamped chains land
# implicitly. Stop 14 had them land explicitly: an implicit step moves an active inequality to g = −ε at once, and
# the velocity reconstruction v = P(x')(x' − x)/(σ²Δt) read that jump as a speed ε/(σ²Δt) (zero-score kinetic loss
# of the data paths: box 2944, ball 18263 per path against ½ N d = 50). dynamics.step_active now removes the rows
# a step acted on (box 64, polytope 70 per path), and implicit landing then does better on four of six sets at ci
# (ULLA MMD, first seed, explicit → implicit: box 0.026 → 0.011, ball 0.0038 → 0.0021, simplex 0.0095 → 0.0080,
# polytope 0.016 → 0.009; worse on box6 0.016 → 0.019, simplex7 0.0091 → 0.0111). α only sets the explicit rate,
# kept for a user switching back (α σ² Δt < 2 at 40; 20 on box6).
# At 600 steps the overdamped models were far from converged too (box_gmm OLLA MMD 0.050 → 0.014 at 4000).
# ε 0.02, not the generic 0.1: every sample that touches a wall is driven to g = −ε, which empties a band of width
# ε along the walls, where MDM's reflected GMM piles its mass (box_gmm, 4000 steps, validation split: OLLA MMD
# 0.0136 → 0.0020, ULLA 0.037 → 0.018; polytope_gmm ULLA 0.016 → 0.007 at ε 0.01).
_convex = {"ci": replace(_small["ci"], train_steps=4000, refreshes=4), "paper": _small["paper"]}
# box6_gmm: σ_max 1 leaves the 6-d forward short of its uniform prior (forward end vs prior MMD 0.11 against 0.002
# between two prior draws; OLLA 0.043); σ_max 2, and γ 2 for the kinetic chain, mix it (validation split: OLLA
# 0.0048, ULLA 0.0037); α 20 keeps its explicit steps stable at σ 2. simplex_dirichlet, for the same reason
# (forward end vs prior 0.12 / 0.20 at σ_max 0.5 / 0.8), takes σ_max 1 / 1.5: OLLA 0.034 → 0.0034, ULLA 0.133 →
# 0.016; the 7-simplex mixes at the smaller σ (0.010 / 0.062) and does worse at the larger (0.0075 / 0.027).
for _name, _cons, _kw, (_od_sig, _ud_sig, _ud_alpha, _ud_gamma) in (
        ("ball_gmm", "ball", {"dim": 2, "eps": 0.02}, ((0.01, 1.0), (0.1, 1.5), 40.0, 5.0)),
        ("simplex_dirichlet", "simplex", {"dim": 3}, ((0.01, 1.0), (0.1, 1.5), 40.0, 5.0)),
        ("simplex7_dirichlet", "simplex", {"dim": 7}, ((0.01, 0.5), (0.05, 0.8), 40.0, 5.0)),
        ("box_gmm", "box", {"dim": 2, "eps": 0.02}, ((0.01, 1.0), (0.1, 1.5), 40.0, 5.0)),
        ("box6_gmm", "box", {"dim": 6, "eps": 0.02}, ((0.01, 2.0), (0.1, 2.0), 20.0, 2.0)),
        ("polytope_gmm", "polytope", {**POLYTOPE_KW, "eps": 0.02}, ((0.01, 1.0), (0.1, 1.5), 40.0, 5.0))):
    _add(BenchmarkSettings(
        _name, _cons, _kw,
        ScheduleCfg(kind="linear", sigma_min=_od_sig[0], sigma_max=_od_sig[1], T=1.0, N=100),
        DynamicsCfg(kind="overdamped", landing="implicit", alpha=50.0),
        ScheduleCfg(kind="linear", sigma_min=_ud_sig[0], sigma_max=_ud_sig[1], T=1.0, N=50),
        DynamicsCfg(kind="underdamped", landing="implicit", alpha=_ud_alpha, gamma=_ud_gamma),
        _convex, metric_name="mmd"))


for _m in (VmfDataset, FileDataset, BenchmarkDataset):
    _m.model_rebuild()
