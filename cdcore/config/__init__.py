"""The ``params.yaml`` schema: pydantic models with every key typed, ranged and cross-checked.

``common`` holds the parts every method reads, ``landing``, ``namm`` and ``dual`` one method's data sets,
settings and benchmark scales each (with the one translation from params to that method's config, shared by
the pipeline and the benches), and ``params`` the whole file. The package imports nothing else of cdcore.
"""

from cdcore.config.common import (
    NAME_RE,
    ConfigError,
    Method,
    ScheduleCfg,
    SplitCfg,
    Strict,
    SweepCfg,
    TrackingCfg,
    sigma_at,
)
from cdcore.config.dual import DigitsDataset, DualPipelineCfg, FinetuneExp
from cdcore.config.landing import (
    BenchmarkDataset,
    DynamicsCfg,
    EvaluateCfg,
    FileDataset,
    ModelCfg,
    SampleCfg,
    TrainCfg,
    VmfDataset,
)
from cdcore.config.namm import NAMM_PROBLEMS, NammDataset
from cdcore.config.params import KIND_METHODS, Dataset, Params, load_params, parse_params

__all__ = [
    "NAME_RE", "ConfigError", "Method", "ScheduleCfg", "SplitCfg", "Strict", "SweepCfg", "TrackingCfg", "sigma_at",
    "DigitsDataset", "DualPipelineCfg", "FinetuneExp", "BenchmarkDataset", "DynamicsCfg", "EvaluateCfg",
    "FileDataset", "ModelCfg", "SampleCfg", "TrainCfg", "VmfDataset", "NAMM_PROBLEMS", "NammDataset", "KIND_METHODS",
    "Dataset", "Params", "load_params", "parse_params",
]
