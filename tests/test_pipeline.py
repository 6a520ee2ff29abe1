"""End to end: the Prefect flow at tiny size, MLflow tracking and registry, DVC reproduction."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_flow_runs_end_to_end_and_registers_a_loadable_sampler(project):
    from mlflow.tracking import MlflowClient

    from flows.pipeline import pipeline

    def parent_runs() -> list:
        exp = MlflowClient().get_experiment_by_name("tiny")
        runs = [] if exp is None else MlflowClient().search_runs([exp.experiment_id])
        return [r for r in runs if r.data.tags.get("cdcore.kind") == "pipeline"]

    before = {r.info.run_id for r in parent_runs()}  # the store is shared by the whole test session
    summary = pipeline(params_path="params.yaml", root=str(project))
    rows = {(r["dataset"], r["sampler"]): r for r in summary["rows"]}
    assert set(rows) == {("vmf", "landing"), ("vmf", "projection"), ("volcano", "landing"), ("volcano", "projection")}
    for (ds, sampler), r in rows.items():
        assert r["n_samples"] == 200 and r["nfe"] == 10
        assert 0 < r["jsd"] <= 1 and 0 < r["jsd_floor"] <= 1 and 0 < r["jsd_uniform"] <= 1
        if sampler == "landing":
            assert r["drop_rate"] == 0.0
            assert r["violation_max"] <= 1e-5
    on_disk = json.loads((project / "reports" / "summary.json").read_text())
    assert len(on_disk["rows"]) == 4
    assert (project / "reports" / "datasets" / "volcano_map.png").stat().st_size > 10_000

    # tracking: one parent run with a nested run per stage and data set
    client = MlflowClient()
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in parent_runs() if r.info.run_id not in before]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    stages_seen = {(r.data.tags["cdcore.stage"], r.data.tags["cdcore.dataset"]) for r in children}
    for ds in ("vmf", "volcano"):
        for stage in ("data", "train", "sample", "evaluate", "register"):
            assert (stage, ds) in stages_seen
    train_run = next(r for r in children if r.data.tags["cdcore.stage"] == "train" and r.data.tags["cdcore.dataset"] == "vmf")
    assert "loss" in train_run.data.metrics and train_run.data.params["train.lr"] == "0.002"

    # the registered sampler loads by alias in a fresh process and returns feasible samples
    code = textwrap.dedent("""
        import mlflow, numpy as np, pandas as pd
        m = mlflow.pyfunc.load_model("models:/tiny-landing-vmf@candidate")
        x = m.predict(pd.DataFrame({"n": [64], "seed": [3]}))
        y = m.predict(pd.DataFrame({"n": [64], "seed": [3]}))
        print(x.shape[0], x.shape[1], float(np.abs(np.linalg.norm(x.astype(np.float64), axis=1) - 1).max()), bool((x == y).all()))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(),
                         cwd=project, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    n, d, viol, same = out.stdout.split()[-4:]
    assert (int(n), int(d)) == (64, 3)
    assert float(viol) <= 1e-5
    assert same == "True"  # a seed gives the same samples

    # a second run reuses every stage's output (no retraining)
    model = project / "models" / "vmf" / "score.pt"
    before = model.stat().st_mtime_ns
    again = pipeline(params_path="params.yaml", root=str(project))
    assert model.stat().st_mtime_ns == before
    assert [r["jsd"] for r in again["rows"]] == [r["jsd"] for r in summary["rows"]]


def _dvc(cwd: Path, *args: str) -> str:
    env = os.environ.copy()
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, env=env,
                         timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def test_dvc_repro_runs_every_stage_once_and_only_what_changed(project):
    """First repro runs all stages; the second runs none; a train parameter re-runs only train and below."""
    if shutil.which("git") is None:
        pytest.skip("git is needed by DVC")
    for item in ("dvc.yaml", "cdcore", "flows"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, project / item)
    import yaml

    params = yaml.safe_load((project / "params.yaml").read_text())
    del params["datasets"]["volcano"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    _dvc(project, "init", "-q")
    _dvc(project, "config", "core.analytics", "false")
    first = _dvc(project, "repro")
    for stage in ("data@vmf", "train@vmf", "sample@vmf", "evaluate@vmf", "register@vmf", "report"):
        assert f"Running stage '{stage}'" in first
    assert (project / "reports" / "summary.json").exists()
    second = _dvc(project, "repro")
    assert "Running stage" not in second
    params["train"]["lr"] = 0.003
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _dvc(project, "repro")
    ran = {line.split("'")[1] for line in third.splitlines() if line.startswith("Running stage")}
    assert ran == {"train@vmf", "sample@vmf", "evaluate@vmf", "register@vmf", "report"}, third


def test_train_stage_keeps_the_best_validation_point_when_asked(project):
    """``train.select: best_val``: every validation point's landing samples are scored on the validation split in the
    data set's metric; the stored model is the best point's (re-scoring it gives the minimum of the logged scores)."""
    import numpy as np
    import torch
    import yaml

    from cdcore.config import parse_params
    from cdcore.data import io
    from flows import stages

    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train"].update(select="best_val", select_samples=120, steps=40, val_every=10)
    params = parse_params(raw)
    stages.run_data(params, "vmf", project)
    path = stages.run_train(params, "vmf", project)
    model, schedule, dyn_cfg, meta = stages.load_model(path)
    history = json.loads((project / "models" / "vmf" / "history.json").read_text())
    scored = {r["step"]: r["val_score"] for r in history if "val_score" in r}
    assert sorted(scored) == [10, 20, 30, 40] and all(np.isfinite(list(scored.values())))
    assert meta["selected_step"] == min(scored, key=scored.get)

    splits, attrs = io.read_dataset(stages.Layout(project).data("vmf"))
    tensors = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in splits.items()}
    from flows.stages import landing as landing_stages

    select = landing_stages.validation_selector(params, "vmf", attrs, tensors, stages.constraint_of(attrs), schedule,
                                                dyn_cfg, torch.device("cpu"))
    assert select(model) == pytest.approx(min(scored.values()), abs=1e-9)

    # the default keeps the last EMA weights and says so
    last = parse_params({**raw, "train": {**raw["train"], "select": "last"}})
    _, _, _, meta_last = stages.load_model(stages.run_train(last, "vmf", project))
    assert meta_last["selected_step"] == 40
