"""Orchestration around cdcore: stage functions, the Prefect flow, the command line.

Importing this package sets offline-safe defaults (telemetry off, Prefect's
home and MLflow's store inside the project folder) unless the user set them.
"""

import os
from pathlib import Path

_DEFAULTED: dict[str, str] = {}  # the values set here, not by the user: use_root may move them


def _defaults() -> None:
    cwd = Path.cwd()
    for key, value in {
        "PREFECT_HOME": str(cwd / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_TRACKING_URI": "sqlite:///mlruns.db",
        "GIT_PYTHON_REFRESH": "quiet",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }.items():
        if key not in os.environ:
            os.environ[key] = value
            _DEFAULTED[key] = value


def use_root(root: str | Path) -> None:
    """Keep a run's tracking store and Prefect home under its project folder ``--root`` (unless the user set them):
    two runs started from one folder with different roots then share no registry and no orchestration state."""
    root = Path(root).resolve()
    for key, value in (("PREFECT_HOME", str(root / ".prefect")), ("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns.db'}")):
        if key in _DEFAULTED and os.environ.get(key) == _DEFAULTED[key]:   # still ours: the user set nothing since
            os.environ[key] = _DEFAULTED[key] = value


_defaults()
