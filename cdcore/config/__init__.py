"""Pydantic models of ``params.yaml``: every key typed, ranged and cross-checked.

Loading goes through :func:`load_params`, which turns pydantic's errors into a
:class:`ConfigError` naming each key, the value found and what is allowed, so a
bad file fails before any work starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
Method = Literal["landing", "namm", "dual"]
NAMM_PROBLEMS = ("burgers", "kolmogorov", "periodic_texture", "total_brightness")


class ConfigError(ValueError):
    """params.yaml is missing, unreadable or invalid; the message says which key and how to fix it."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    path: str = Field(min_length=1)
    format: Literal["auto", "latlon_csv", "npy", "h5"] = "auto"
    constraint: str = "sphere"
    tolerance: float = Field(1e-4, gt=0, le=1.0, description="largest constraint violation accepted in the file")
    train_steps: int | None = Field(None, ge=1, le=10_000_000, description="overrides train.steps for this data set")
    schedule: Optional["ScheduleCfg"] = None
    dynamics: Optional["DynamicsCfg"] = None

    @field_validator("constraint")
    @classmethod
    def _known_constraint(cls, v: str) -> str:
        from cdcore.constraints import available

        if v not in available():
            raise ValueError(f"unknown constraint {v!r}; available: {', '.join(available())}")
        return v


class BenchmarkDataset(Strict):
    """A problem of the landing benchmark suite (cdcore/benchmarks.py): its data, constraint and metric.

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
        from cdcore.benchmarks import BENCHMARKS

        if v not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {v!r}; available: {', '.join(BENCHMARKS)}")
        return v

    @property
    def constraint(self) -> str:
        from cdcore.benchmarks import BENCHMARKS

        return BENCHMARKS[self.benchmark].constraint

    @property
    def constraint_kwargs(self) -> dict:
        """The benchmark's constructor arguments of its constraint (e.g. a ball's dimension, SO(10)'s tangent mode)."""
        from cdcore.benchmarks import BENCHMARKS

        return dict(BENCHMARKS[self.benchmark].constraint_kwargs)


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
        from cdcore.methods.namm.fit import NammCfg

        bad = sorted(set(v) - set(NammCfg.model_fields) | ({"steps"} & set(v)))
        if bad:
            raise ValueError(f"unknown or reserved NAMM fit settings {bad} (steps: use finetune_steps); "
                             f"available: {', '.join(sorted(set(NammCfg.model_fields) - {'steps'}))}")
        return v

    @property
    def constraint(self) -> str:
        return self.problem


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


Dataset = Annotated[Union[VmfDataset, FileDataset, BenchmarkDataset, NammDataset, DigitsDataset],
                    Field(discriminator="kind")]
KIND_METHODS: dict[str, tuple[str, ...]] = {"vmf": ("landing",), "file": ("landing",), "benchmark": ("landing",),
                                            "namm": ("namm",), "digits": ("dual",)}


class SplitCfg(Strict):
    train: float = Field(0.8, gt=0, lt=1)
    val: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitCfg":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class ScheduleCfg(Strict):
    kind: Literal["linear", "geometric", "constant"] = "linear"
    sigma_min: float = Field(0.01, gt=0, le=100)
    sigma_max: float = Field(1.0, gt=0, le=100)
    T: float = Field(4.0, gt=0, le=1000)
    N: int = Field(100, ge=1, le=10_000)

    @model_validator(mode="after")
    def _ordered(self) -> "ScheduleCfg":
        if self.sigma_max < self.sigma_min:
            raise ValueError(f"sigma_max ({self.sigma_max}) must be >= sigma_min ({self.sigma_min})")
        return self


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


class TrackingCfg(Strict):
    experiment: str = Field("cdcore", min_length=1)
    model_name: str = Field("cdcore-{method}", min_length=1, pattern=r"^([A-Za-z0-9_.\-]|\{method\})+$",
                            description="registered as <model_name>-<data set>; {method} is replaced by the method")
    alias: str = Field("candidate", pattern=r"^[a-z][a-z0-9_\-]*$")
    register_model: bool = True


class SweepCfg(BaseModel):
    """The ``sweep:`` section of params.yaml (every key optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    methods: list[str] = Field(default_factory=list, description="methods to compare; default: params' `method`")
    datasets: list[str] = Field(default_factory=list, description="data set names; default: all in params.yaml")
    seeds: list[int] = Field(default_factory=lambda: [0, 1], min_length=1, description="one point per seed")
    register_models: bool = Field(False, description="register each point's sampler in the MLflow registry")
    gpu: Literal["auto", "always", "never"] = Field(
        "auto", description="ask Dask for a GPU resource per point: auto = when train/sample run on CUDA")
    gpu_resource: str = Field("GPU", min_length=1, description="name of the Dask worker resource that counts GPUs")
    workers: int = Field(2, ge=1, le=1024, description="local cluster size (ignored with CDCORE_DASK_ADDRESS)")
    threads_per_point: Optional[int] = Field(
        1, ge=1, le=1024, description="torch CPU threads per point (None: torch's default)")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or any(s < 0 for s in v):
            raise ValueError(f"seeds must be distinct and >= 0, got {v}")
        return v

    @field_validator("methods", "datasets")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"entries must not repeat, got {v}")
        return v


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


class Params(Strict):
    seed: int = Field(0, ge=0, le=2**31 - 1)
    method: Method = Field("landing", description="method of the data sets that do not name their own")
    datasets: dict[str, Dataset] = Field(min_length=1)
    split: SplitCfg = SplitCfg()
    schedule: ScheduleCfg = ScheduleCfg()
    dynamics: DynamicsCfg = DynamicsCfg()
    model: ModelCfg = ModelCfg()
    train: TrainCfg = TrainCfg()
    sample: SampleCfg = SampleCfg()
    evaluate: EvaluateCfg = EvaluateCfg()
    tracking: TrackingCfg = TrackingCfg()
    sweep: SweepCfg = SweepCfg()
    dual: DualPipelineCfg = DualPipelineCfg()
    finetune: dict[str, FinetuneExp] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _methods_fit_data(self) -> "Params":
        for name, ds in self.datasets.items():
            allowed = KIND_METHODS[ds.kind]
            m = self.method_for(name)
            if m not in allowed:
                where = f"datasets.{name}.method" if ds.method is not None else "method"
                raise ValueError(
                    f"{where}: data set {name!r} (kind {ds.kind}) is trained by method {' or '.join(allowed)}, "
                    f"not {m!r}; set `method: {allowed[0]}` under datasets.{name}")
        for name, ft in self.finetune.items():
            if not NAME_RE.match(name):
                raise ValueError(f"finetune: name {name!r} must match {NAME_RE.pattern}")
            if name in self.datasets:
                raise ValueError(f"finetune.{name}: the name is taken by a data set; choose another")
            base = self.datasets.get(ft.base)
            if base is None or base.kind != "digits":
                raise ValueError(f"finetune.{name}.base: {ft.base!r} is not a digits data set in `datasets`")
            if ft.new_class not in base.exclude:
                raise ValueError(f"finetune.{name}.new_class: {ft.new_class} is not excluded from data set {ft.base!r}; "
                                 "fine-tuning learns a class the pretrained model never saw (add it to its exclude)")
        return self

    def registered_name(self, name: str) -> str:
        """The MLflow registry name of a data set's (or fine-tuning experiment's) sampler."""
        method = "dual" if name in self.finetune else self.method_for(name)
        return f"{self.tracking.model_name.replace('{method}', method)}-{name}"

    def method_for(self, name: str) -> str:
        """The data set's own ``method``, else the one its kind allows, else the top-level ``method``."""
        ds = self.dataset(name)
        if ds.method is not None:
            return ds.method
        if ds.kind in ("namm", "digits"):
            return KIND_METHODS[ds.kind][0]
        return self.method

    @model_validator(mode="after")
    def _explicit_landing_is_stable(self) -> "Params":
        """Refuse, before any work, an explicit landing step that would amplify the residual.

        Explicit landing multiplies h by (1 − α σ_k² Δt) per step; at ≥ 2 that factor is ≤ −1.
        The sampler would fall back to the implicit step there, but a user who asked for
        explicit landing should learn it at configuration time, with the numbers to change.
        """
        from cdcore.dynamics import NoiseSchedule

        for name in self.datasets:
            if self.datasets[name].kind in ("namm", "digits"):
                continue
            dyn = self.dynamics_for(name)
            if dyn.landing != "explicit":
                continue
            sc = self.schedule_for(name)
            sched = NoiseSchedule(kind=sc.kind, sigma_min=sc.sigma_min, sigma_max=sc.sigma_max, T=sc.T, N=sc.N)
            sig2 = [s * s for s in sched.sigmas()[: sched.N]]
            rates = [dyn.alpha * v * sched.dt for v in sig2]
            bad = sum(r >= 2.0 for r in rates)
            if bad:
                where = f"datasets.{name}.dynamics" if self.datasets[name].dynamics is not None else "dynamics"
                raise ValueError(
                    f"{where}: explicit landing is unstable for data set {name!r}: alpha*sigma^2*dt reaches "
                    f"{max(rates):.3g} >= 2 on {bad} of {sched.N} steps (alpha = {dyn.alpha:g}, dt = {sched.dt:.3g}); "
                    f"set landing: implicit, lower alpha below {2.0 / (max(sig2) * sched.dt):.3g}, or raise schedule.N")
        return self

    @field_validator("datasets")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not NAME_RE.match(name):
                raise ValueError(f"data set name {name!r} must match {NAME_RE.pattern} (lower case, digits, _)")
        return v

    def schedule_for(self, name: str) -> ScheduleCfg:
        ds = self.dataset(name)
        if ds.schedule is not None:
            return ds.schedule
        if isinstance(ds, BenchmarkDataset):
            from cdcore.benchmarks import BENCHMARKS

            return BENCHMARKS[ds.benchmark].od_schedule
        return self.schedule

    def dynamics_for(self, name: str) -> DynamicsCfg:
        ds = self.dataset(name)
        if ds.dynamics is not None:
            return ds.dynamics
        if isinstance(ds, BenchmarkDataset):
            from cdcore.benchmarks import BENCHMARKS

            return BENCHMARKS[ds.benchmark].od_dynamics
        return self.dynamics

    def prior_for(self, name: str) -> str:
        """Where this data set's backward sampler starts ("analytic" or "forward"); only benchmarks choose."""
        ds = self.dataset(name)
        if not isinstance(ds, BenchmarkDataset):
            return "analytic"
        if ds.prior is not None:
            return ds.prior
        from cdcore.benchmarks import BENCHMARKS

        return BENCHMARKS[ds.benchmark].prior

    def train_for(self, name: str) -> TrainCfg:
        """train settings with this data set's step override applied."""
        steps = self.dataset(name).train_steps
        return self.train if steps is None else self.train.model_copy(update={"steps": steps})

    def dataset(self, name: str) -> VmfDataset | FileDataset | BenchmarkDataset | NammDataset | DigitsDataset:
        try:
            return self.datasets[name]
        except KeyError:  # noqa: PERF203
            raise ConfigError(f"no data set {name!r} in params.yaml; defined: {', '.join(self.datasets)}") from None


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    value = err.get("input")
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (remove it, or check its spelling against README 'Configuration')"
        return f"  - {loc}: {msg}"
    if err["type"] == "missing":
        return f"  - {loc}: required key is missing"
    if err["type"] == "value_error":
        msg = msg.removeprefix("Value error, ")
        if not loc or isinstance(value, dict):  # a cross-field rule: its message names the keys
            return f"  - {loc + ': ' if loc else ''}{msg}"
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"  - {loc} = {shown}: {msg}"


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a mapping; raise ConfigError listing every bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, found {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        lines = [_describe(err) for err in e.errors()]
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(lines) + f"\nFix the listed keys in {source}.") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found; run from the project folder or pass --params PATH")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e}); fix the syntax at the position shown") from None
    return parse_params(raw, source=str(path))


for _m in (VmfDataset, FileDataset, BenchmarkDataset, NammDataset, DigitsDataset):
    _m.model_rebuild()
