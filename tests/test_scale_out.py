"""Scale-out logic: the sweep's configuration and its run on a Dask cluster, lineage and promotion rules.

The servers (Prefect, PostgreSQL, S3, MLflow) are exercised in tests/test_infra.py; everything here runs
against the session's embedded stores (see conftest.py), with real MLflow runs and registry entries.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml



def _write_params(project: Path, **changes) -> dict:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for key, value in changes.items():
        params[key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


# ----- sweep configuration ----------------------------------------------------------
def test_sweep_defaults_cover_every_dataset_the_method_and_two_seeds(project):
    from cdcore.config.common import SweepCfg
    from flows.sweep import load_sweep

    params, cfg = load_sweep(project / "params.yaml")
    assert cfg.datasets == list(params.datasets) == ["vmf", "volcano"]
    assert cfg.methods == [params.method] and cfg.seeds == [0, 1]
    assert cfg.gpu == "auto" and cfg.register_models is False
    assert SweepCfg().seeds == [0, 1]


def test_sweep_section_and_overrides_are_validated(project):
    from cdcore.config import ConfigError
    from flows.sweep import load_sweep

    _write_params(project, sweep={"datasets": ["volcano"], "seeds": [3, 4, 5], "gpu": "never", "workers": 3})
    _, cfg = load_sweep(project / "params.yaml")
    assert (cfg.datasets, cfg.seeds, cfg.gpu, cfg.workers) == (["volcano"], [3, 4, 5], "never", 3)
    _, cfg = load_sweep(project / "params.yaml", {"seeds": [7], "datasets": None})
    assert cfg.seeds == [7] and cfg.datasets == ["volcano"]  # None means "keep the file's value"

    _write_params(project, sweep={"datasets": ["nowhere"]})
    with pytest.raises(ConfigError, match="no data set 'nowhere'.*defined: vmf, volcano"):
        load_sweep(project / "params.yaml")
    _write_params(project, sweep={"seeds": [1, 1], "colour": "red"})
    with pytest.raises(ConfigError) as e:
        load_sweep(project / "params.yaml")
    assert "sweep.seeds" in str(e.value) and "sweep.colour" in str(e.value)
    _write_params(project, sweep={"methods": ["diffusion-by-hope"]})
    with pytest.raises(ConfigError, match="method"):
        load_sweep(project / "params.yaml")


def test_point_params_pin_dataset_seed_and_absolute_input_paths(project):
    from cdcore.config import parse_params
    from flows.sweep import load_sweep, needs_gpu, point_name, point_params

    params, cfg = load_sweep(project / "params.yaml")
    raw = point_params(params, project, "landing", "volcano", 5, register=False)
    p = parse_params(raw)
    assert list(p.datasets) == ["volcano"] and p.seed == 5 and p.method == "landing"
    assert Path(p.datasets["volcano"].path).is_absolute() and Path(p.datasets["volcano"].path).is_file()
    assert p.tracking.register_model is False
    assert point_name("volcano", "landing", 5) == "volcano-landing-s5"
    assert needs_gpu(params, cfg.model_copy(update={"gpu": "always"})) is True
    assert needs_gpu(params, cfg.model_copy(update={"gpu": "never"})) is False
    cpu = params.model_copy(update={"train": params.train.model_copy(update={"device": "cpu"}),
                                    "sample": params.sample.model_copy(update={"device": "cpu"})})
    assert needs_gpu(cpu, cfg) is False


def test_local_cluster_declares_the_gpu_resource_the_points_ask_for():
    pytest.importorskip("prefect_dask")
    from flows.sweep import task_runner

    runner = task_runner(workers=3, gpu_resource="GPU")
    assert runner.cluster_kwargs["resources"] == {"GPU": 1}
    assert runner.cluster_kwargs["threads_per_worker"] == 1
    assert "resources" not in task_runner(workers=2).cluster_kwargs
    remote = task_runner(address="tcp://127.0.0.1:8786")
    assert remote.address == "tcp://127.0.0.1:8786"


# ----- the sweep on Dask ----------------------------------------------------------------
@pytest.mark.slow
def test_sweep_of_four_points_runs_on_dask_workers_under_one_parent_run(project, tmp_path):
    """2 data sets x 2 seeds on a local 2-process Dask cluster, each point asking for a GPU resource."""
    pytest.importorskip("prefect_dask")
    import mlflow
    from mlflow.tracking import MlflowClient

    from flows.sweep import sweep

    experiment = "tiny-sweep"
    _write_params(project, tracking={**yaml.safe_load((project / "params.yaml").read_text())["tracking"],
                                     "experiment": experiment},
                  sweep={"seeds": [0, 1], "gpu": "always", "workers": 2})
    client = MlflowClient()
    if client.get_experiment_by_name(experiment) is None:  # artifacts in the test folder, not the repo (P6)
        client.create_experiment(experiment, artifact_location=(tmp_path / "artifacts").as_uri())

    summary = sweep(params_path="params.yaml", root=str(project), sweep_id="t4")

    points = summary["points"]
    assert summary["failed"] == [] and len(points) == 4
    assert {(p["dataset"], p["seed"]) for p in points} == {("vmf", 0), ("vmf", 1), ("volcano", 0), ("volcano", 1)}
    # every point ran in a Dask worker process (not this one) that honoured the GPU resource annotation
    assert all(p["pid"] != os.getpid() for p in points)
    assert all(p["dask"].get("resources") == {"GPU": 1} for p in points), [p["dask"] for p in points]
    # each in its own folder, none clobbering another
    roots = {Path(p["root"]) for p in points}
    assert len(roots) == 4 and all(r.parent == project / "sweeps" / "t4" for r in roots)
    for p in points:
        root = Path(p["root"])
        assert (root / "data" / f"{p['dataset']}.h5").is_file() and (root / "models" / p["dataset"] / "score.pt").is_file()
        assert json.loads((root / "point.json").read_text())["params"]["seed"] == p["seed"]
    assert not (project / "data").exists()  # nothing written to the project's own outputs
    # seeds differ, so the data of one data set differ between points
    vmf = sorted((p for p in points if p["dataset"] == "vmf"), key=lambda p: p["seed"])
    assert (Path(vmf[0]["root"]) / "data/vmf.h5").read_bytes() != (Path(vmf[1]["root"]) / "data/vmf.h5").read_bytes()
    agg = {(r["dataset"], r["sampler"]): r for r in summary["aggregate"]}
    assert agg[("vmf", "landing")]["n_seeds"] == 2 and agg[("vmf", "landing")]["violation_max_mean"] <= 1e-5
    assert json.loads((project / "sweeps/t4/summary.json").read_text())["sweep_id"] == "t4"

    # MLflow: one sweep parent, four point runs below it, each point's stage runs below the point
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=500)
    parents = [r for r in runs if r.data.tags.get("cdcore.kind") == "sweep" and r.data.tags.get("cdcore.sweep_id") == "t4"]
    assert len(parents) == 1 and parents[0].info.run_id == summary["parent_run_id"]
    assert parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 4
    assert all(r.data.tags["cdcore.kind"] == "sweep-point" and r.info.status == "FINISHED" for r in children)
    assert {r.info.run_id for r in children} == {p["run_id"] for p in points}
    for child in children:
        stages = {r.data.tags.get("cdcore.stage") for r in runs if r.data.tags.get("mlflow.parentRunId") == child.info.run_id}
        assert {"data", "train", "sample", "evaluate"} <= stages
        assert "landing.jsd" in child.data.metrics
    assert "landing.vmf.landing.jsd_mean" in parents[0].data.metrics
    mlflow.end_run()


# ----- lineage and promotion --------------------------------------------------------------
def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=cdcore-test", "-c", "user.email=test@invalid", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


def test_lineage_tags_name_params_dvc_outputs_and_commit(project):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    from flows.registry import dvc_lock_hashes, lineage, lineage_tags

    tags, text = lineage(project, "params.yaml", "vmf")
    assert tags["dvc.lock"] == "absent" and tags["git.commit"] == "unknown"
    assert all(len(v) <= 300 for v in tags.values())  # the params are an artifact, not a tag (issue 29)
    recorded = json.loads(text)
    assert list(recorded["datasets"]) == ["vmf"] and recorded["datasets"]["vmf"]["n"] == 400  # only its data set
    assert recorded["train"]["steps"] == 40 and recorded["seed"] == 0
    lock = {"schema": "2.0", "stages": {
        "data@vmf": {"cmd": "cdcore data --dataset vmf",
                     "outs": [{"path": "data/vmf.h5", "hash": "md5", "md5": "a" * 32, "size": 1}]},
        "train@vmf": {"cmd": "cdcore train --dataset vmf",
                      "outs": [{"path": "models/vmf", "hash": "md5", "md5": "b" * 32 + ".dir", "size": 2}]},
        "data@volcano": {"cmd": "cdcore data --dataset volcano",
                         "outs": [{"path": "data/volcano.h5", "hash": "md5", "md5": "c" * 32, "size": 3}]}}}
    (project / "dvc.lock").write_text(yaml.safe_dump(lock))
    _git(project, "init", "-q")
    _git(project, "add", "params.yaml", "dvc.lock")
    _git(project, "commit", "-qm", "lineage")
    tags = lineage_tags(project, "params.yaml", "vmf")
    assert tags["git.commit"] == _git(project, "rev-parse", "HEAD") and tags["git.dirty"] == "false"
    assert tags["dvc.data_md5"] == "a" * 32 and tags["dvc.out.models/vmf"] == "b" * 32 + ".dir"
    assert "dvc.out.data/volcano.h5" not in tags
    assert len(tags["dvc.lock_sha256"]) == 64 and len(tags["cdcore.params_sha256"]) == 64
    assert dvc_lock_hashes(project) == {"data/vmf.h5": "a" * 32, "models/vmf": "b" * 32 + ".dir", "data/volcano.h5": "c" * 32}
    (project / "params.yaml").write_text((project / "params.yaml").read_text() + "\n# edited\n")
    assert lineage_tags(project, "params.yaml", "vmf")["git.dirty"] == "true"


@pytest.mark.slow
def test_promotion_moves_champion_only_for_a_better_feasible_candidate_and_says_why(project, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    from flows.promote import promote

    client = MlflowClient()
    name = "tiny-promote"
    exp = client.get_experiment_by_name("tiny-promote") or None
    exp_id = exp.experiment_id if exp else client.create_experiment("tiny-promote",
                                                                    artifact_location=(tmp_path / "a").as_uri())
    client.create_registered_model(name)
    source = tmp_path / "model"
    source.mkdir()

    def register(jsd: float | None, viol: float) -> str:
        run = client.create_run(exp_id, tags={"cdcore.dataset": "vmf"})
        if jsd is not None:
            client.log_metric(run.info.run_id, "landing.jsd", jsd)
        client.log_metric(run.info.run_id, "landing.violation_max", viol)
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version(name, source=str(source), run_id=run.info.run_id)
        client.set_registered_model_alias(name, "candidate", mv.version)
        return str(mv.version)

    def go(**kw):
        return promote(name, root=project, **kw)

    v1 = register(0.50, 1e-7)
    d = go()
    assert d.promoted and d.outcome == "promoted" and d.champion_before is None and "no current 'champion'" in d.reason
    v2 = register(0.60, 1e-7)  # worse
    d = go()
    assert not d.promoted and "does not beat 'champion' version 1" in d.reason and "0.6 >= 0.5" in d.reason
    v3 = register(0.30, 2e-3)  # better but infeasible
    d = go()
    assert not d.promoted and "violates the constraint" in d.reason and d.tol == 1e-5  # evaluate.feasibility_tol
    d = go(tol=1e-2)  # a looser tolerance, given explicitly, admits it
    assert d.promoted and d.champion_before == v1
    v4 = register(0.29, 1e-7)
    d = go(min_improvement=0.05)  # 0.29 is not 0.05 better than 0.30
    assert not d.promoted and "- 0.05" in d.reason
    v5 = register(None, 1e-7)  # no primary metric
    d = go()
    assert not d.promoted and "has no landing.jsd" in d.reason
    d = go(version=v4)
    assert d.promoted and d.champion_before == v3
    assert go(version=v4).outcome == "unchanged"

    assert str(client.get_model_version_by_alias(name, "champion").version) == v4
    tags = client.get_model_version(name, v2).tags
    assert tags["promotion.outcome"] == "rejected" and tags["promotion.champion_before"] == v1
    assert "does not beat" in tags["promotion.reason"] and "git.commit" in tags and "cdcore.params_sha256" in tags
    assert client.get_model_version(name, v3).tags["promotion.replaced_by"] == v4
    note = client.get_run(client.get_model_version(name, v3).run_id).data.tags["mlflow.note.content"]
    assert "REJECTED" in note and "PROMOTED" in note  # both decisions on v3, in order
    last = json.loads(client.get_registered_model(name).tags["champion.last_decision"])
    assert last["outcome"] == "unchanged" and last["candidate"] == v4
    with pytest.raises(ValueError, match="no version under alias 'nowhere'"):
        go(from_alias="nowhere")
    assert v5  # registered, never champion
    mlflow.end_run()
