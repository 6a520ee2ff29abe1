"""The model registry, all or nothing: a trained sampler becomes one version that already carries its scores,
lineage (params, DVC hashes, git commit) and description when it appears; the alias moves last.

- Everything that can fail on the user's files (a garbage ``dvc.lock``, params.yaml) is read before any version
  exists, so a failure leaves the registry as it was.
- An unchanged model keeps its version: the version records the sha256 of its weights, and registering the same
  weights again re-points the alias at that version instead of creating an identical one.
- A registration killed after the version was created is completed by the next run (the same weights are found).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from cdcore.config import ConfigError
from flows import tracking
from flows.layout import Layout

WEIGHTS_TAG = "cdcore.weights_sha256"


def _git(root: Path, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _ppath(root: Path, params_path: str | Path) -> Path:
    return Path(params_path) if Path(params_path).is_absolute() else Path(root) / params_path


def params_raw(params_path: Path) -> Optional[dict]:
    """The validated parameters as JSON data (without ``sweep``, which is not a model's), None if no file."""
    from cdcore.config import parse_params
    from cdcore.config.common import read_yaml

    if not params_path.is_file():
        return None
    raw = read_yaml(params_path)
    if not isinstance(raw, dict):
        return None
    raw = {k: v for k, v in raw.items() if k != "sweep"}
    return parse_params(raw, source=str(params_path)).model_dump(mode="json")


def dvc_lock_hashes(root: Path, dataset: Optional[str] = None) -> dict[str, str]:
    """``{out path: md5}`` from dvc.lock, for the stages of ``dataset`` (``<stage>@<dataset>``) or all."""
    from cdcore.config.common import read_yaml

    lock = Layout(Path(root)).dvc_lock()
    if not lock.is_file():
        return {}
    data = read_yaml(lock)
    if not isinstance(data, dict) or not isinstance(data.get("stages") or {}, dict):
        raise ConfigError(f"{lock}: not a DVC lock file (no `stages:` mapping); delete it and run `dvc repro` "
                          "(or `dvc commit`) to write a new one")
    out: dict[str, str] = {}
    for stage, spec in (data.get("stages") or {}).items():
        if dataset is not None and not str(stage).endswith(f"@{dataset}"):
            continue
        outs = spec.get("outs") if isinstance(spec, dict) else None
        for o in outs if isinstance(outs, list) else []:
            digest = (o.get("md5") or o.get("etag") or o.get("checksum")) if isinstance(o, dict) else None
            if digest and o.get("path"):
                out[str(o["path"])] = str(digest)
    return out


def lineage(root: str | Path = ".", params_path: str | Path = "params.yaml",
            dataset: Optional[str] = None) -> tuple[dict[str, str], Optional[str]]:
    """Tags tying a model version to its parameters, its data version (DVC) and its code (git), and the parameters
    themselves as JSON text (an artifact of the run: as a tag they made the model page unreadable)."""
    root = Path(root).resolve()
    tags: dict[str, str] = {}
    raw, text = params_raw(_ppath(root, params_path)), None
    if raw is not None:
        if dataset is not None and dataset in raw.get("datasets", {}):
            raw = {**raw, "datasets": {dataset: raw["datasets"][dataset]}}
        text = json.dumps(raw, sort_keys=True, separators=(",", ":"))
        tags["cdcore.params_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    lock = Layout(root).dvc_lock()
    if lock.is_file():
        hashes = dvc_lock_hashes(root, dataset)
        tags["dvc.lock_sha256"] = hashlib.sha256(lock.read_bytes()).hexdigest()
        tags.update({f"dvc.out.{path}": digest for path, digest in sorted(hashes.items())})
        if dataset is not None and f"data/{dataset}.h5" in hashes:
            tags["dvc.data_md5"] = hashes[f"data/{dataset}.h5"]
    else:
        tags["dvc.lock"] = "absent"
        data = Layout(root).data(dataset) if dataset else None
        if data is not None and data.is_file():
            tags["data.sha256"] = hashlib.sha256(data.read_bytes()).hexdigest()
    commit = _git(root, "rev-parse", "HEAD")
    tags["git.commit"] = commit or "unknown"
    if commit:
        tags["git.dirty"] = "true" if _git(root, "status", "--porcelain", "--untracked-files=no") else "false"
    return tags, text


def lineage_tags(root: str | Path = ".", params_path: str | Path = "params.yaml",
                 dataset: Optional[str] = None) -> dict[str, str]:
    return lineage(root, params_path, dataset)[0]


def client(tracking_uri: Optional[str] = None):
    import flows  # noqa: F401  (offline-safe defaults)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlruns.db"))


def _log_params_artifact(cl, run_id: Optional[str], text: Optional[str]) -> None:
    if run_id and text is not None:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "params.json").write_text(text)
            cl.log_artifact(run_id, str(Path(tmp) / "params.json"), "lineage")


def record_lineage(name: str, version: str, root: str | Path = ".", params_path: str | Path = "params.yaml",
                   dataset: Optional[str] = None, tracking_uri: Optional[str] = None, cl=None) -> dict[str, str]:
    """Complete the lineage of an existing version (one registered before ``git commit`` / ``dvc commit``)."""
    cl = cl or client(tracking_uri)
    mv = cl.get_model_version(name, str(version))
    dataset = dataset or mv.tags.get("cdcore.dataset")
    tags, text = lineage(root, params_path, dataset)
    if dataset:
        tags["cdcore.dataset"] = dataset
    for k, v in tags.items():
        cl.set_model_version_tag(name, str(version), k, v)
    if "dvc.lock" not in tags and mv.tags.get("dvc.lock") == "absent":
        cl.delete_model_version_tag(name, str(version), "dvc.lock")  # superseded by the dvc.* hashes
    try:
        _log_params_artifact(cl, mv.run_id, text)
    except Exception:  # the run may be gone or in a store this client cannot write: the sha256 tag stays
        pass
    return tags


def _existing(cl, name: str, sha: str):
    """The version holding these exact weights, if one was registered (completely or not)."""
    from mlflow.exceptions import MlflowException

    try:
        found = cl.search_model_versions(f"name = '{name}' and tags.`{WEIGHTS_TAG}` = '{sha}'")
    except MlflowException:
        return None
    return max(found, key=lambda mv: int(mv.version)) if found else None


def register(weights: Path, *, name: str, alias: str, dataset: str, code: Path, root: Path,
             metrics: dict[str, float], tags: dict[str, str], description: str, max_n: int,
             output_shape: Optional[tuple[int, ...]] = None, parent_run_id: Optional[str] = None,
             params_path: str | Path = "params.yaml") -> tuple[Optional[str], bool]:
    """Register the sampler (pyfunc from code + weights-only checkpoint); returns ``(version, created)``.

    The model is logged from code (``flows/samplers/<method>.py``), not pickled: loading it reads tensors with
    ``weights_only=True`` and runs only code you can read. ``max_n`` is the ceiling of one ``predict`` call,
    recorded in the model's config (``load_model(uri, model_config={"max_n": N})`` raises it).
    """
    if not tracking.enabled():
        return None, False
    import mlflow
    import numpy as np
    import pandas as pd
    import torch
    from mlflow.models import infer_signature

    from cdcore.checkpoint import load_checkpoint
    from cdcore.data.io import sha256_file

    sha = sha256_file(weights)
    line, params_text = lineage(root, params_path, dataset)      # may raise: before anything is registered
    all_tags = {**line, **tags, **{k: f"{v:.6g}" for k, v in metrics.items()}, "cdcore.dataset": dataset,
                WEIGHTS_TAG: sha}
    cl = client()
    mv = _existing(cl, name, sha)
    created = mv is None
    if created:
        shape = output_shape or (int(load_checkpoint(weights)["meta"]["dim"]),)
        example = pd.DataFrame({"n": [4], "seed": [0]})
        signature = infer_signature(example, np.zeros((4, *shape), dtype=np.float32))
        with tracking.stage_run("register", dataset, parent_run_id) as run:
            tracking.log_metrics(metrics)
            _log_params_artifact(cl, run.info.run_id, params_text)
            info = mlflow.pyfunc.log_model(
                name="sampler", python_model=str(code), artifacts={"weights": str(weights)}, signature=signature,
                input_example=example, model_config={"max_n": int(max_n)},
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "cdcore"])
            # one call creates the version with every tag: there is no half-tagged version to find later
            mv = mlflow.register_model(info.model_uri, name, tags={**all_tags, "run_id": run.info.run_id})
    else:
        for k, v in all_tags.items():   # completes an interrupted registration; what the version recorded stays
            if k not in mv.tags:
                cl.set_model_version_tag(name, mv.version, k, v)
    version = str(mv.version)
    cl.update_model_version(name, version, description=description)
    cl.update_registered_model(name, description=description)
    cl.set_registered_model_alias(name, alias, version)          # last: the alias only ever names a whole version
    return version, created
