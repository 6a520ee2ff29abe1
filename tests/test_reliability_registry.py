"""Faults of issue 28 (second probe): a diverged model registered, a new version for unchanged weights, predict
without a ceiling or returning fewer points, half-done registrations, and tracebacks where one line is due.

Each test was run against the code before the fix (red) and after it (green); RELIABILITY.md names them.
"""

from __future__ import annotations

import errno
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny project whose vmf data set is trained, sampled and evaluated (not registered)."""
    from cdcore.config import load_params
    from flows import stages
    from tests.conftest import REPO, tiny_params_yaml

    root = tmp_path_factory.mktemp("trained")
    (root / "assets" / "earth").mkdir(parents=True)
    shutil.copy(REPO / "assets" / "earth" / "volcano.csv", root / "assets" / "earth" / "volcano.csv")
    (root / "params.yaml").write_text(tiny_params_yaml())
    params = load_params(root / "params.yaml")
    for run in (stages.run_data, stages.run_train, stages.run_sample, stages.run_evaluate):
        run(params, "vmf", root)
    return root


def _copy(trained: Path, tmp_path: Path, model_name: str, **tracking) -> Path:
    """The trained project under its own registry name (tests share one MLflow store)."""
    root = tmp_path / "p"
    shutil.copytree(trained, root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tracking"] = {**params["tracking"], "model_name": model_name, **tracking}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def _versions(name: str) -> list:
    from mlflow.tracking import MlflowClient

    return MlflowClient().search_model_versions(f"name = '{name}'")


def _cli(*args: str):
    res = runner.invoke(app, list(args))
    return res.exit_code, res.output


# ----- 1: divergence ----------------------------------------------------------------------------------------------
def test_an_exploding_but_finite_loss_stops_training(monkeypatch):
    """lr: 1 drove the loss to 1.9e35 without a NaN and the run exited 0: divergence is more than NaN."""
    import torch

    from cdcore.config import DynamicsCfg, ModelCfg, ScheduleCfg, TrainCfg
    from cdcore.constraints import make
    from cdcore.methods.errors import DivergenceError
    from cdcore.methods.landing import schedule_from, train

    real, calls = train.path_loss_terms, [0]

    def exploding(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs) * 10.0 ** min(calls[0], 30)   # finite, and 1e30 times larger by the end

    monkeypatch.setattr(train, "path_loss_terms", exploding)
    x = torch.nn.functional.normalize(torch.randn(200, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    cfg = TrainCfg(steps=40, batch_size=32, refresh_every=20, val_every=20, checkpoint_every=20, val_paths=8)
    with pytest.raises(DivergenceError, match="training diverged"):
        train.train_landing(make("sphere"), x, x[:20], schedule_from(ScheduleCfg(N=5)),
                            DynamicsCfg(), ModelCfg(hidden=16, depth=1, time_features=4), cfg)


def test_a_diverged_model_is_not_registered(trained, tmp_path):
    root = _copy(trained, tmp_path, "rel-diverged")
    report_path = root / "reports" / "datasets" / "vmf.json"
    report = json.loads(report_path.read_text())
    report["rows"][0]["score"] = math.nan      # what the probe's lr: 1 model scored
    report["rows"][0]["drop_rate"] = 1.0
    report_path.write_text(json.dumps(report))
    code, out = _cli("register", "--dataset", "vmf", "--root", str(root))
    assert code == 2 and "not registered" in out and "diverged" in out and "Traceback" not in out
    assert _versions("rel-diverged-vmf") == []


def test_predict_refuses_n_above_the_recorded_ceiling_and_never_returns_fewer_points(trained, tmp_path, monkeypatch):
    import mlflow
    import pandas as pd

    root = _copy(trained, tmp_path, "rel-ceiling", max_predict_n=50)
    code, out = _cli("register", "--dataset", "vmf", "--root", str(root))
    assert code == 0, out
    uri = "models:/rel-ceiling-vmf@candidate"
    model = mlflow.pyfunc.load_model(uri)
    with pytest.raises(Exception, match="above this model's ceiling of 50"):
        model.predict(pd.DataFrame({"n": [51], "seed": [0]}))
    raised = mlflow.pyfunc.load_model(uri, model_config={"max_n": 100})   # the consumer raises it
    assert raised.predict(pd.DataFrame({"n": [51], "seed": [0]})).shape == (51, 3)

    import cdcore.methods.landing as landing

    real = landing.sample_landing

    def all_dropped(*args, **kwargs):
        res = real(*args, **kwargs)
        res.dropped[:] = True
        return res

    monkeypatch.setattr(landing, "sample_landing", all_dropped)
    with pytest.raises(Exception, match="only 0 of the 20 samples"):
        model.predict(pd.DataFrame({"n": [20], "seed": [0]}))


# ----- 5 and 8: registration all or nothing ---------------------------------------------------------------------
def test_registering_unchanged_weights_keeps_the_version(trained, tmp_path):
    root = _copy(trained, tmp_path, "rel-unchanged")
    for _ in range(2):
        code, out = _cli("register", "--dataset", "vmf", "--root", str(root))
        assert code == 0, out
    versions = _versions("rel-unchanged-vmf")
    assert [str(v.version) for v in versions] == ["1"]
    assert json.loads((root / "registry" / "vmf.json").read_text())["version"] == "1"


def test_a_garbage_dvc_lock_registers_nothing(trained, tmp_path):
    root = _copy(trained, tmp_path, "rel-badlock")
    (root / "dvc.lock").write_text("- this is\n- not a lock file\n")
    code, out = _cli("register", "--dataset", "vmf", "--root", str(root))
    assert code == 2 and "dvc.lock" in out and "Traceback" not in out, out
    assert _versions("rel-badlock-vmf") == []


def test_an_interrupted_registration_is_completed_by_the_next_run(trained, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from cdcore.config import load_params
    from flows import stages

    root = _copy(trained, tmp_path, "rel-interrupted")
    params = load_params(root / "params.yaml")
    real = MlflowClient.set_registered_model_alias

    def killed(self, *args, **kwargs):   # SIGTERM just after "Created version"
        raise KeyboardInterrupt("signal 15")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", killed)
    with pytest.raises(KeyboardInterrupt):
        stages.run_register(params, "vmf", root)
    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", real)
    assert not (root / "registry" / "vmf.json").exists()   # no stale record of a registration that did not finish

    stages.run_register(params, "vmf", root)
    (mv,) = _versions("rel-interrupted-vmf")
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("rel-interrupted-vmf", "candidate").version) == str(mv.version)
    for tag in ("cdcore.weights_sha256", "landing.score", "git.commit", "cdcore.params_sha256", "cdcore.method"):
        assert tag in mv.tags, tag
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id],
                              filter_string="tags.`cdcore.stage` = 'register' and tags.`cdcore.dataset` = 'vmf'")
    assert all(r.info.status != "RUNNING" for r in runs)


# ----- 10: one line naming the cause and the fix ----------------------------------------------------------------
def test_a_garbage_report_is_one_line(trained, tmp_path):
    root = _copy(trained, tmp_path, "rel-garbage")
    (root / "reports" / "datasets" / "vmf.json").write_text("{not json")
    for cmd in (("report", "--dataset", "vmf"), ("register", "--dataset", "vmf")):
        code, out = _cli(*cmd, "--root", str(root))
        assert code == 2 and "not a valid JSON report" in out and "cdcore evaluate" in out, out
        assert "Traceback" not in out


def test_finetuning_from_the_registry_with_tracking_off_is_one_line(project, monkeypatch):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["datasets"]["digits_no9"] = {"kind": "digits", "method": "dual", "minority": [], "exclude": [9]}
    params["finetune"] = {"digits9": {"source": "models:/nowhere@candidate", "base": "digits_no9", "new_class": 9}}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.setenv("CDCORE_TRACKING", "off")
    code, out = _cli("finetune", "--root", str(project))
    assert code == 2 and "tracking is off" in out and "Traceback" not in out, out
    monkeypatch.setenv("CDCORE_TRACKING", "on")
    code, out = _cli("finetune", "--root", str(project))
    assert code == 2 and "cannot be loaded from the registry" in out and "Traceback" not in out, out


@pytest.mark.parametrize("error, says", [
    (OSError(errno.ENOSPC, "No space left on device", "models/vmf/score.pt"), "no space left"),
    (OSError(errno.EROFS, "Read-only file system", "data/vmf.h5"), "not writable"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", ".cache/locks/vmf.lock"), "wrong type"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"), "not enough memory"),
])
def test_failures_that_a_retry_cannot_fix_are_one_line_and_never_retried(error, says):
    from prefect.states import Failed

    from flows.failures import message
    from flows.pipeline import _retry_transient

    assert says in message(error)
    state = Failed(data=error)
    assert _retry_transient(None, None, state) is False
    assert _retry_transient(None, None, Failed(data=OSError(errno.EAGAIN, "busy"))) is True   # transient: retried


def test_a_corrupt_mlflow_store_is_one_line(trained, tmp_path, monkeypatch):
    root = _copy(trained, tmp_path, "rel-corrupt")
    db = tmp_path / "mlruns.db"
    db.write_bytes(b"this is not an sqlite database" * 100)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    code, out = _cli("register", "--dataset", "vmf", "--root", str(root))
    assert code == 2 and "MLflow store" in out and "Traceback" not in out, out[-2000:]


@pytest.mark.slow
def test_a_data_error_under_cdcore_run_is_one_line_without_a_prefect_traceback(project):
    (project / "assets" / "earth" / "volcano.csv").write_text("latitude,longitude\n95.0,10.0\n12.0,20.0\n")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["datasets"] = {"volcano": params["datasets"]["volcano"]}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--root", str(project)], cwd=project,
                         capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert "latitude" in text and "error:" in text


# ----- 9: paths outside the project ------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/etc/passwd", "../../../etc/passwd"])
def test_a_data_path_outside_the_project_is_refused_without_echoing_the_file(project, path):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["datasets"] = {"volcano": {**params["datasets"]["volcano"], "path": path}}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    code, out = _cli("data", "--dataset", "volcano", "--root", str(project))
    assert code == 2 and "outside the project folder" in out and "outside_project: true" in out, out
    assert "root:" not in out and "/bin/" not in out       # nothing of the file is shown
    assert not (project / "data" / "volcano.h5").exists()


def test_an_error_shows_a_row_cut_short_not_the_file(project):
    secret = "s3cr3t-token-" + "x" * 60
    (project / "assets" / "earth" / "volcano.csv").write_text(f"12.0,20.0\n{secret},{secret},{secret},{secret}\n")
    code, out = _cli("data", "--dataset", "volcano", "--root", str(project))
    assert code == 2 and "data row 2" in out and secret not in out, out


# ----- 2: --root isolation ------------------------------------------------------------------------------------------
def test_two_roots_started_from_one_folder_share_no_tracking_or_orchestration_state(tmp_path):
    import os

    from tests.conftest import tiny_params_yaml

    here, a, b = tmp_path / "here", tmp_path / "a", tmp_path / "b"
    for d in (here, a, b):
        d.mkdir()
    for r in (a, b):
        (r / "params.yaml").write_text(tiny_params_yaml())
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_HOME")}
    for r in (a, b):
        out = subprocess.run([sys.executable, "-m", "flows.cli", "data", "--dataset", "vmf", "--root", str(r)],
                             cwd=here, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert (r / "mlruns.db").is_file() and (r / "mlartifacts").is_dir()
    assert sorted(p.name for p in here.iterdir()) == []     # nothing written where the commands were typed


@pytest.mark.parametrize("stage, first", [("train", "data"), ("sample", "train"), ("evaluate", "data")])
def test_a_stage_run_before_its_upstream_names_the_command_to_run_first(project, stage, first):
    code, out = _cli(stage, "--dataset", "vmf", "--root", str(project))
    assert code == 2 and f"run `cdcore {first} --dataset vmf` first" in out and "Traceback" not in out, out


# ----- issue 29: the model page as a consumer sees it ---------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_model_page_says_what_the_model_is_how_good_and_how_to_call_it(trained, tmp_path, monkeypatch):
    """Through a real `mlflow server` on 127.0.0.1 and its REST API, as the MLflow UI reads it."""
    import os
    import time
    import urllib.parse
    import urllib.request

    from mlflow.tracking import MlflowClient

    store = tmp_path / "page.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    root = _copy(trained, tmp_path, "page-{method}")
    code, out = _cli("register", "--dataset", "vmf", "--root", str(root))
    assert code == 0, out
    assert [str(v.version) for v in MlflowClient().search_model_versions("tags.`cdcore.method` = 'landing'")] == ["1"]
    assert MlflowClient().search_model_versions("tags.`cdcore.method` = 'namm'") == []

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{store}", "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        query = urllib.parse.urlencode({"name": "page-landing-vmf", "version": "1"})
        mv = json.load(urllib.request.urlopen(f"{base}/api/2.0/mlflow/model-versions/get?{query}"))["model_version"]
        model = json.load(urllib.request.urlopen(
            f"{base}/api/2.0/mlflow/registered-models/get?name=page-landing-vmf"))["registered_model"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    tags = {t["key"]: t["value"] for t in mv["tags"]}
    assert tags["cdcore.method"] == "landing" and tags["cdcore.constraint"] == "sphere"
    assert tags["cdcore.metric"] == "jsd_latlon" and float(tags["cdcore.floor"]) >= 0
    assert max(len(v) for v in tags.values()) <= 300 and "cdcore.params" not in tags   # no unreadable column
    for text in (mv["description"], model["description"]):
        assert "`vmf`" in text and "`landing`" in text and "`sphere`" in text
        assert "| landing | jsd_latlon |" in text and "max violation" in text and "drop rate" in text
        assert 'load_model("models:/page-landing-vmf@candidate")' in text and '"n": [1000], "seed": [0]' in text


@pytest.mark.parametrize("fault, says", [("disk_full", "no space left"), ("out_of_memory", "not enough memory"),
                                         ("lock_is_a_folder", "wrong type")])
def test_failures_a_retry_cannot_fix_reach_the_user_as_one_line(project, monkeypatch, fault, says):
    """The same faults as above, through the command the user types."""
    from flows.stages import landing as landing_stages

    if fault == "disk_full":
        def full(path, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        monkeypatch.setattr(landing_stages.io, "write_dataset", full)
    elif fault == "out_of_memory":
        _cli("data", "--dataset", "vmf", "--root", str(project))

        def oom(*args, **kwargs):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

        monkeypatch.setattr(landing_stages, "train_landing", oom)
    else:
        (project / ".cache" / "locks" / "vmf.lock").mkdir(parents=True)
    code, out = _cli("train" if fault == "out_of_memory" else "data", "--dataset", "vmf", "--root", str(project))
    assert code == 2 and says in out and "Traceback" not in out, out
