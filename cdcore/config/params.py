"""``params.yaml`` as one validated object: the data sets of every method and the sections they read.

Loading goes through :func:`load_params`, which turns pydantic's errors into a :class:`ConfigError` naming
each key, the value found and what is allowed, so a bad file fails before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from cdcore.config.common import (NAME_RE, ConfigError, Method, ScheduleCfg, SplitCfg, Strict, SweepCfg, TrackingCfg,
                                  describe_error, read_yaml, sigma_at)
from cdcore.config.dual import DigitsDataset, DualPipelineCfg, FinetuneExp
from cdcore.config.landing import (BENCHMARK_SETTINGS, BenchmarkDataset, DynamicsCfg, EvaluateCfg, FileDataset,
                                   ModelCfg, SampleCfg, TrainCfg, VmfDataset)
from cdcore.config.namm import NammDataset


Dataset = Annotated[Union[VmfDataset, FileDataset, BenchmarkDataset, NammDataset, DigitsDataset],
                    Field(discriminator="kind")]
KIND_METHODS: dict[str, tuple[str, ...]] = {"vmf": ("landing",), "file": ("landing",), "benchmark": ("landing",),
                                            "namm": ("namm",), "digits": ("dual",)}


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
        for name in self.datasets:
            if self.datasets[name].kind in ("namm", "digits"):
                continue
            dyn = self.dynamics_for(name)
            if dyn.landing != "explicit":
                continue
            sc = self.schedule_for(name)
            dt = sc.T / sc.N
            sig2 = [sigma_at(sc.kind, sc.sigma_min, sc.sigma_max, sc.T, k * dt) ** 2 for k in range(sc.N)]
            rates = [dyn.alpha * v * dt for v in sig2]
            bad = sum(r >= 2.0 for r in rates)
            if bad:
                where = f"datasets.{name}.dynamics" if self.datasets[name].dynamics is not None else "dynamics"
                raise ValueError(
                    f"{where}: explicit landing is unstable for data set {name!r}: alpha*sigma^2*dt reaches "
                    f"{max(rates):.3g} >= 2 on {bad} of {sc.N} steps (alpha = {dyn.alpha:g}, dt = {dt:.3g}); "
                    f"set landing: implicit, lower alpha below {2.0 / (max(sig2) * dt):.3g}, or raise schedule.N")
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
            return BENCHMARK_SETTINGS[ds.benchmark].od_schedule
        return self.schedule

    def dynamics_for(self, name: str) -> DynamicsCfg:
        ds = self.dataset(name)
        if ds.dynamics is not None:
            return ds.dynamics
        if isinstance(ds, BenchmarkDataset):
            return BENCHMARK_SETTINGS[ds.benchmark].od_dynamics
        return self.dynamics

    def prior_for(self, name: str) -> str:
        """Where this data set's backward sampler starts ("analytic" or "forward"); only benchmarks choose."""
        ds = self.dataset(name)
        if not isinstance(ds, BenchmarkDataset):
            return "analytic"
        if ds.prior is not None:
            return ds.prior
        return BENCHMARK_SETTINGS[ds.benchmark].prior

    def train_for(self, name: str) -> TrainCfg:
        """train settings with this data set's step override applied."""
        steps = self.dataset(name).train_steps
        return self.train if steps is None else self.train.model_copy(update={"steps": steps})

    def dataset(self, name: str) -> VmfDataset | FileDataset | BenchmarkDataset | NammDataset | DigitsDataset:
        try:
            return self.datasets[name]
        except KeyError:  # noqa: PERF203
            raise ConfigError(f"no data set {name!r} in params.yaml; defined: {', '.join(self.datasets)}") from None


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a mapping; raise ConfigError listing every bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, found {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        lines = [describe_error(err) for err in e.errors()]
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(lines) + f"\nFix the listed keys in {source}.") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found; run from the project folder or pass --params PATH")
    return parse_params(read_yaml(path), source=str(path))
