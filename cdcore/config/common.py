"""The parts of ``params.yaml`` every method reads, and the error every bad key raises.

The package imports nothing else of cdcore: the schema is the lowest layer, and every other module may read
it. The σ(t) of a noise schedule is defined here, once, because the schema checks explicit landing steps
against it before any work starts and the samplers step with it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


Method = Literal["landing", "namm", "dual"]


class ConfigError(ValueError):
    """params.yaml is missing, unreadable or invalid; the message says which key and how to fix it."""


class Strict(BaseModel):
    """Every key known, every value frozen, every number finite (an infinite tolerance switches its guard off)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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


def sigma_at(kind: str, sigma_min: float, sigma_max: float, T: float, t: float) -> float:
    """σ(t) on [0, T]: constant σ_max, linear σ_min → σ_max, or geometric σ_min (σ_max/σ_min)^(t/T)."""
    if kind == "constant":
        return sigma_max
    if kind == "linear":
        return sigma_min + (sigma_max - sigma_min) * t / T
    return sigma_min * (sigma_max / sigma_min) ** (t / T)


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


class TrackingCfg(Strict):
    experiment: str = Field("cdcore", min_length=1)
    model_name: str = Field("cdcore-{method}", min_length=1, pattern=r"^([A-Za-z0-9_.\-]|\{method\})+$",
                            description="registered as <model_name>-<data set>; {method} is replaced by the method")
    alias: str = Field("candidate", pattern=r"^[a-z][a-z0-9_\-]*$")
    register_model: bool = True
    max_predict_n: int = Field(1_000_000, ge=1, description="the most samples one predict call draws; a consumer "
                               "raises it with load_model(uri, model_config={'max_n': N})")


class SweepCfg(BaseModel):
    """The ``sweep:`` section of params.yaml (every key optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

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


def describe_error(err: dict[str, Any]) -> str:
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


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing what a configuration has no use for: aliases (nine nested ones expand to 10⁹
    values: an alias bomb) and a key given twice in one mapping (the last one won without a word)."""

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.source, self.paths = source, {}

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            ev = self.peek_event()
            raise ConfigError(f"{self.source}: line {ev.start_mark.line + 1}: YAML aliases (*{ev.anchor}) are not "
                              "accepted; write the values out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        where, seen = self.paths.get(id(node), ""), set()
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else repr(k)
            if key in seen:
                raise ConfigError(f"{self.source}: line {k.start_mark.line + 1}: key {key!r} appears twice in "
                                  f"{where or 'the top level'!r}; keep one")
            seen.add(key)
            self.paths[id(v)] = f"{where}.{key}" if where else str(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """A configuration file as plain data, or a :class:`ConfigError` naming the file, the line and the fix."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); save it as "
                          "UTF-8") from None
    loader = _StrictLoader(text, str(path))
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e}); fix the syntax at the position shown") from None
    finally:
        loader.dispose()
