"""Faults: planted pickles, a SIGKILL during training, stale temporary files, divergence reporting, concurrent runs."""

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cdcore.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from cdcore.data import io


class Exploit:
    """Unpickling this runs a shell command: what a malicious artifact would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_pickle_in_a_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "score.pt"
    torch.save({"state_dict": {}, "meta": Exploit(marker)}, evil)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(evil)
    assert not marker.exists()
    # the same file through plain pickle would have run the command: the test is real
    with open(evil, "rb") as f:
        data = f.read()
    assert b"system" in data


def test_planted_pickle_in_a_registered_model_folder_is_refused(project):
    from flows.stages import load_model

    marker = project / "pwned"
    target = project / "models" / "vmf" / "score.pt"
    target.parent.mkdir(parents=True)
    with open(target, "wb") as f:
        pickle.dump({"meta": Exploit(marker)}, f)
    with pytest.raises(CheckpointError):
        load_model(target)
    assert not marker.exists()


def test_truncated_checkpoint_gives_a_clear_error(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(p, {"w": torch.randn(100, 100)})
    p.write_bytes(p.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(p)


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".score.pt.{pid}.abc.tmp"
    live = tmp_path / f".score.pt.{os.getpid()}.def.tmp"
    stale.write_text("half")
    live.write_text("in progress")
    removed = io.remove_stale_temps(tmp_path)
    assert removed == [stale] and live.exists()


@pytest.mark.slow
def test_sigkill_during_training_then_rerun_resumes_and_completes(project):
    """Kill `cdcore run` while it trains, run it again: it resumes from the checkpoint and finishes cleanly."""
    import yaml

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["datasets"] = {"vmf": params["datasets"]["vmf"]}
    params["train"].update(steps=1500, checkpoint_every=100, val_every=1500)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "flows.cli", "run"]
    proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    ckpt_dir = project / ".cache" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline:
        ckpts = list(ckpt_dir.glob("vmf-*.ckpt")) if ckpt_dir.exists() else []
        if ckpts and load_checkpoint(ckpts[0])["step"] >= 200:
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.3)
    else:
        pytest.fail("no checkpoint appeared in time")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(ckpts[0])["step"]
    assert not (project / "models" / "vmf" / "score.pt").exists()

    out = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    meta = load_checkpoint(project / "models" / "vmf" / "score.pt")["meta"]
    assert meta["resumed_from"] >= killed_at > 0
    leftovers = [p for d in ("data", "models", "samples", "reports", "registry") for p in (project / d).rglob("*.tmp")]
    assert leftovers == []
    # the registry holds one complete version with the alias, loadable
    from mlflow.tracking import MlflowClient

    mv = MlflowClient().get_model_version_by_alias("tiny-landing-vmf", "candidate")
    assert mv.status == "READY"


def test_divergence_fails_the_stage_and_is_logged_to_mlflow(project, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    import flows.stages as stages
    from cdcore.config import load_params
    from cdcore.methods.errors import DivergenceError

    params = load_params(project / "params.yaml")
    stages.run_data(params, "vmf", project)

    def diverge(*args, **kwargs):
        raise DivergenceError("training loss is nan at step 7")

    from flows.stages import landing as landing_stages

    monkeypatch.setattr(landing_stages, "train_landing", diverge)
    with pytest.raises(DivergenceError):
        stages.run_train(params, "vmf", project)
    assert not (project / "models" / "vmf" / "score.pt").exists()
    runs = MlflowClient().search_runs([mlflow.get_experiment_by_name("tests").experiment_id],
                                      filter_string="tags.`cdcore.stage` = 'train'", order_by=["start_time DESC"])
    assert runs[0].info.status == "FAILED"
    assert "nan at step 7" in runs[0].data.tags["cdcore.error"]


def test_prefect_retries_transient_errors_only():
    from cdcore.data.errors import DataError
    from cdcore.methods.errors import DivergenceError
    from flows.pipeline import _retry_transient

    class State:
        def __init__(self, exc):
            self.exc = exc

        def result(self):
            raise self.exc

    assert _retry_transient(None, None, State(OSError("database is locked"))) is True
    assert _retry_transient(None, None, State(DataError("bad file"))) is False
    assert _retry_transient(None, None, State(DivergenceError("nan"))) is False


# ----- one run per data set and project folder (flows/lock.py) ---------------------------------------------------
HOLD_LOCK = """
import sys, time
from flows.lock import dataset_lock
with dataset_lock(sys.argv[1], sys.argv[2], timeout=0):
    print("locked", flush=True)
    time.sleep(float(sys.argv[3]))
"""


@pytest.fixture
def lock_holder():
    """Start a child process that takes a data set's lock and sleeps; returns it once it holds the lock."""
    from tests.conftest import REPO

    children = []

    def start(root: Path, name: str, seconds: float = 120) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(root), name, str(seconds)], cwd=root, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        children.append(proc)
        line = proc.stdout.readline()
        assert line.strip() == "locked", proc.stderr.read()
        return proc

    yield start
    for proc in children:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_locked_dataset_gives_a_second_run_in_the_same_folder_a_clear_error(project, lock_holder, monkeypatch):
    from cdcore.config import load_params
    from flows import stages
    from flows.lock import LockBusyError
    from tests.conftest import REPO

    holder = lock_holder(project, "vmf")
    monkeypatch.delenv("CDCORE_LOCK_TIMEOUT", raising=False)
    params = load_params(project / "params.yaml")
    t0 = time.perf_counter()
    with pytest.raises(LockBusyError) as err:
        stages.run_data(params, "vmf", project)
    assert time.perf_counter() - t0 < 1.0  # default: no wait
    msg = str(err.value)
    assert f"data set 'vmf' in folder {project.resolve()} is being processed by pid {holder.pid} (" in msg
    assert "wait for it" in msg and "--root OTHER_FOLDER" in msg
    assert not (project / "data" / "vmf.h5").exists()

    # with a timeout it waits that long, then gives the same error
    monkeypatch.setenv("CDCORE_LOCK_TIMEOUT", "0.5")
    t0 = time.perf_counter()
    with pytest.raises(LockBusyError, match=r"pid \d+ .*waited 0.5s"):
        stages.run_train(params, "vmf", project)
    assert time.perf_counter() - t0 >= 0.5

    # what the user of `cdcore run` (refused before Prefect starts) and of a stage command sees:
    # the message, exit code 2, no traceback
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("CDCORE_LOCK_TIMEOUT")
    for args in (["run"], ["data", "--dataset", "vmf"]):
        out = subprocess.run([sys.executable, "-m", "flows.cli", *args, "--root", str(project)],
                             cwd=project, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, out.stderr[-3000:]
        assert f"error: data set 'vmf' in folder {project.resolve()} is being processed by pid {holder.pid}" in out.stderr
        assert "Traceback" not in out.stderr
    assert not (project / "data").exists()


def test_busy_lock_is_waited_for_up_to_CDCORE_LOCK_TIMEOUT(project, lock_holder, monkeypatch):
    from cdcore.config import ConfigError
    from flows.lock import dataset_lock

    lock_holder(project, "vmf", seconds=1.0)  # lets go by itself after a second
    monkeypatch.setenv("CDCORE_LOCK_TIMEOUT", "60")
    t0 = time.perf_counter()
    with dataset_lock(project, "vmf"):
        waited = time.perf_counter() - t0
    assert 0.2 < waited < 30
    monkeypatch.setenv("CDCORE_LOCK_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="CDCORE_LOCK_TIMEOUT='soon'"):
        with dataset_lock(project, "vmf"):
            pass


def test_lock_does_not_block_other_datasets_or_other_folders(project, tmp_path_factory, lock_holder):
    import threading

    from cdcore.config import load_params
    from flows import stages
    from flows.lock import dataset_lock

    lock_holder(project, "vmf")
    params = load_params(project / "params.yaml")
    other = tmp_path_factory.mktemp("other_root")
    with dataset_lock(other, "vmf", timeout=0), dataset_lock(project, "volcano", timeout=0):
        # re-entrant in this process, also from another thread (Prefect runs tasks on worker threads)
        assert stages.run_data(params, "volcano", project).exists()
        result = {}
        t = threading.Thread(target=lambda: result.update(out=stages.run_data(params, "volcano", project)))
        t.start()
        t.join(30)
        assert result["out"].exists()
    # released when the outermost holder leaves: another process can take it now
    lock_holder(project, "volcano", seconds=0)
    lock_holder(other, "vmf", seconds=0)


def test_lock_of_a_sigkilled_holder_is_free_again(project, lock_holder):
    from flows.lock import LockBusyError, dataset_lock

    holder = lock_holder(project, "vmf")
    with pytest.raises(LockBusyError):
        with dataset_lock(project, "vmf", timeout=0):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with dataset_lock(project, "vmf", timeout=0) as path:  # the kernel dropped the dead holder's flock
        assert path.read_text().split("\n")[0] == str(os.getpid())
    assert path.exists() and path.read_text() == ""
