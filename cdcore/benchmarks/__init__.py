"""``cdcore bench ...``: the benchmark suites, as functions that return rows and figures and never choose paths.

``suite`` holds the landing problems (data, constraint, metric, released settings); ``landing``, ``cost``,
``namm``, ``namm_dps``, ``dual`` and ``dual_finetune`` run one suite each.
"""

from cdcore.config.landing import Scale
from cdcore.benchmarks.suite import (
    BENCHMARKS,
    Benchmark,
    BenchmarkDataMissing,
    Paths,
    get,
    reflect_into_box,
    so_n_mixture,
    split,
)

__all__ = ["BENCHMARKS", "Benchmark", "BenchmarkDataMissing", "Paths", "Scale", "get", "reflect_into_box",
           "so_n_mixture", "split"]
