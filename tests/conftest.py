"""Shared fixtures: an isolated MLflow store and Prefect home per session, tiny parameter sets."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

# One intra-op thread for the whole session: the tests' networks are tiny, and raising the count again
# later in a process has broken MKL's batched LU here ("Pivots given to lu_solve must all be >= 1").
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CDCORE_SHARED", REPO.parent / "shared"))

TINY_PARAMS = """
seed: 0
datasets:
  vmf: {kind: vmf, method: landing, n: 400, components: 2, kappa: 30.0}
  volcano: {kind: file, method: landing, path: assets/earth/volcano.csv, train_steps: 30}
schedule: {N: 10}
model: {hidden: 32, depth: 2, time_features: 4}
train: {steps: 40, batch_size: 64, refresh_every: 20, val_every: 20, checkpoint_every: 20, val_paths: 16}
sample: {n_samples: 200}
tracking: {experiment: tiny, model_name: tiny-landing}
"""


@pytest.fixture(autouse=True)
def seeded_rng():
    """Every test draws from the same global RNG state, whatever ran before it: a draw-dependent failure
    reproduces on its own, and a test's outcome does not hang on the order or subset run."""
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session", autouse=True)
def isolated_services(tmp_path_factory):
    """Point Prefect's home and MLflow's store at a temporary folder for the whole session."""
    base = tmp_path_factory.mktemp("services")
    os.environ["PREFECT_HOME"] = str(base / "prefect")
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{base / 'mlruns.db'}"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "true"
    os.environ["DVC_NO_ANALYTICS"] = "1"
    os.environ["CDCORE_EXPERIMENT"] = "tests"
    yield base
    # Prefect stops its temporary API server from an atexit hook and logs that through a console handler bound to
    # pytest's capture stream, closed by then: every green run ended with a "Logging error" traceback. Stopping the
    # server here instead leaves its API log worker flushing to a dead server. After the last test nothing is left
    # to log that a test could read, so logging's documented switch for handler errors is turned off.
    logging.raiseExceptions = False


@pytest.fixture
def project(tmp_path) -> Path:
    """A throw-away project folder with the tiny params and the volcano catalogue."""
    (tmp_path / "assets" / "earth").mkdir(parents=True)
    shutil.copy(REPO / "assets" / "earth" / "volcano.csv", tmp_path / "assets" / "earth" / "volcano.csv")
    (tmp_path / "params.yaml").write_text(tiny_params_yaml())
    return tmp_path


def tiny_params_yaml() -> str:
    """The repository's params.yaml with the tiny overrides: every key present, as DVC requires."""
    import yaml

    full = yaml.safe_load((REPO / "params.yaml").read_text())
    full["finetune"] = {}          # the repository's experiments name data sets the tiny ones replace
    for key, value in yaml.safe_load(TINY_PARAMS).items():
        if isinstance(value, dict) and key != "datasets":
            full[key] = {**full.get(key, {}), **value}
        else:
            full[key] = value
    return yaml.safe_dump(full, sort_keys=False)
