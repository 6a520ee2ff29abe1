"""Scale-out infrastructure: offline checks of infra/ and prefect.yaml, then real servers on 127.0.0.1.

Offline: the compose file against the compose-spec schema, the Kubernetes manifests (and the GPU work
pool's rendered Job) against the Kubernetes schemas, loopback-only ports, no committed credentials.

Servers (no mocks, started with the infra/local scripts, stopped by their stop scripts):
* a Prefect server (SQLite) + process worker runs a *scheduled* run of the pipeline deployed from
  prefect.yaml;
* PostgreSQL + an S3 store (moto) + an MLflow server on them: the pipeline tracks and registers there,
  DVC pushes to the same S3, a model is promoted and loaded by alias in a fresh process.
Each server test skips, naming what is missing, when a binary is not installed.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

INFRA = REPO / "infra"
LOCAL = INFRA / "local"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str | None:
    exe = BIN / name
    return str(exe) if exe.exists() else shutil.which(name)


# ----- offline: compose, Kubernetes, prefect.yaml, credentials -----------------------------
def test_compose_file_matches_the_compose_spec():
    exe = _tool("check-jsonschema")
    if exe is None:
        pytest.skip("check-jsonschema not installed (pip install check-jsonschema)")
    out = subprocess.run([exe, "--builtin-schema", "vendor.compose-spec", str(INFRA / "docker-compose.yml")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _interpolate_defaults(text: str) -> str:
    """Compose interpolation with an empty environment: ${X:-d} -> d; ${X} or ${X:?msg} -> unresolved."""
    def sub(m: re.Match) -> str:
        op, arg = m.group(2), m.group(3)
        if op in (":-", "-"):
            return arg
        return f"<unset {m.group(1)}>"
    return _VAR.sub(sub, text)


def test_every_published_port_binds_loopback_and_services_are_healthchecked():
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    published = 0
    for name, svc in compose["services"].items():
        assert svc.get("network_mode") != "host", f"{name}: network_mode host bypasses the loopback binding"
        for port in svc.get("ports", []):
            if isinstance(port, dict):
                host_ip = _interpolate_defaults(str(port.get("host_ip", "")))
            else:
                parts = _interpolate_defaults(str(port)).split(":")
                assert len(parts) == 3, f"{name}: port {port!r} must name the host address (HOST:PUBLISHED:TARGET)"
                host_ip = parts[0]
            assert host_ip == "127.0.0.1", f"{name}: port {port!r} binds {host_ip!r} by default, not 127.0.0.1"
            published += 1
        if svc.get("restart") != "no":  # long-running services report their health
            assert "healthcheck" in svc, f"{name}: no healthcheck"
    assert published >= 4
    example = dict(line.split("=", 1) for line in (INFRA / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert example["CDCORE_BIND"] == "127.0.0.1"
    # every ${VAR} the compose file needs without a default is documented in .env.example
    needed = {m.group(1) for m in _VAR.finditer((INFRA / "docker-compose.yml").read_text())
              if m.group(2) not in (":-", "-")}
    assert needed <= set(example), f"not in infra/.env.example: {sorted(needed - set(example))}"


def test_real_env_file_is_git_ignored():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "check-ignore", "-q", "infra/.env"], cwd=REPO)
    assert out.returncode == 0, "infra/.env (real credentials) must be git-ignored"


def _render_job_template(template: dict, values: dict) -> dict:
    """What the Kubernetes worker does with the pool's base job template: defaults, then the values."""
    from prefect.utilities.templating import apply_values

    props = template["variables"]["properties"]
    merged = {k: v["default"] for k, v in props.items() if v.get("default") is not None}
    merged.update(values)
    return apply_values(template["job_configuration"], merged)


def test_kubernetes_manifests_and_gpu_job_template_validate():
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed")
    version = "1.30"  # oldest minor still commonly deployed; the manifests use nothing newer
    for path in sorted((INFRA / "k8s").glob("*.yaml")):
        if path.name.startswith("values-"):
            continue  # Helm values, not manifests (checked below)
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert docs, path
        for doc in docs:
            kv.validate(doc, version, strict=True)

    template = json.loads((INFRA / "k8s" / "work-pool-gpu.json").read_text())
    config = _render_job_template(template, {"image": "registry.example.org/cdcore:0.1.0", "gpu": 2})
    job = config["job_manifest"]
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu" and pod["nodeSelector"]
    kv.validate(job, version, strict=False)
    # prefect-kubernetes requires completions/parallelism in the pod spec (its base manifest puts them
    # there; the API server drops them): strict validation of everything else
    strict = json.loads(json.dumps(job))
    for key in ("completions", "parallelism"):
        strict["spec"]["template"]["spec"].pop(key)
    strict["metadata"]["name"] = "cdcore-check"
    kv.validate(strict, version, strict=True)

    values = yaml.safe_load((INFRA / "k8s" / "values-prefect-worker.yaml").read_text())
    assert values["worker"]["config"]["workPool"] == "cdcore-k8s-gpu"
    assert values["worker"]["config"]["type"] == "kubernetes" and values["worker"]["apiConfig"] == "server"
    try:
        from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration
    except ImportError:
        return
    KubernetesWorkerJobConfiguration.model_validate(config)  # the worker accepts the rendered template


def test_prefect_yaml_deployments_point_at_real_flows_and_pools():
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    pull = spec["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert pull["directory"] == "{{ $PROJECT_DIR }}"
    gpu_vars = json.loads((INFRA / "k8s" / "work-pool-gpu.json").read_text())["variables"]["properties"]
    seen = set()
    for dep in spec["deployments"]:
        path, _, func = dep["entrypoint"].partition(":")
        assert (REPO / path).is_file(), dep["entrypoint"]
        flow = load_flow_from_entrypoint(str(REPO / path) + ":" + func)
        inspect.signature(flow.fn).bind(**dep.get("parameters", {}))  # every parameter is the flow's
        assert dep["schedules"] and all("cron" in s for s in dep["schedules"])
        pool = dep["work_pool"]
        if pool["name"] == "cdcore-k8s-gpu":
            assert set(pool["job_variables"]) <= set(gpu_vars)  # declared in the pool's template
        else:
            assert pool["name"] == "cdcore-process"
        seen.add(func)
    assert seen == {"pipeline", "sweep"}
    assert "CDCORE_POOL:=cdcore-process" in (LOCAL / "lib.sh").read_text()  # the pool the scripts create


def test_local_stack_scripts_parse_and_pair_up():
    starts = sorted(p.name for p in LOCAL.glob("start-*.sh"))
    assert {"start-postgres.sh", "start-s3.sh", "start-mlflow.sh", "start-prefect.sh", "start-worker.sh"} <= set(starts)
    for name in starts:
        assert (LOCAL / name.replace("start-", "stop-")).is_file(), f"{name} has no stop script"
    for script in LOCAL.glob("*.sh"):
        out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert out.returncode == 0, f"{script.name}: {out.stderr}"
        if script.name.startswith(("start-", "stop-")):
            assert os.access(script, os.X_OK), f"{script.name} is not executable"
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        out = subprocess.run([shellcheck, "-x", "-S", "warning", *map(str, LOCAL.glob("*.sh"))], capture_output=True,
                             text=True, cwd=LOCAL)
        assert out.returncode == 0, out.stdout


def test_dockerfile_copies_only_what_exists_and_its_context_filter_admits_it():
    text = (INFRA / "Dockerfile").read_text()
    sources = [s for line in text.splitlines() if line.startswith("COPY ") for s in line.split()[1:-1]]
    assert sources
    for s in sources:
        assert (REPO / s).exists(), f"infra/Dockerfile copies {s}, which does not exist"
    ignore = (INFRA / "Dockerfile.dockerignore").read_text()
    for s in sources:
        assert f"!{s}" in ignore or f"!{s}/**" in ignore, f"{s} is excluded from the build context"


def _candidate_files() -> list[Path]:
    """What git would commit: tracked files plus untracked, not ignored ones."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        return [p for p in REPO.rglob("*") if p.is_file() and ".venv" not in p.parts and ".git" not in p.parts]
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True)
    return [REPO / p for p in out.stdout.decode().split("\0") if p]


# credential-shaped values; the patterns are split so this file does not match itself
_SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AK" r"IA|AS" r"IA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIV" r"ATE KEY-----"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "password in a URL": re.compile(r"\b[a-z][a-z0-9+.\-]*://[^/\s:@'\"]+:([^@\s/'\"]+)@"),
}
_ASSIGNMENT = re.compile(r"(?i)\b([A-Z0-9_]*(?:PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|API_KEY)[A-Z0-9_]*)"
                         r"[ \t]*[:=][ \t]*['\"]?([^\s'\"#,]*)")
_CONFIG_SUFFIXES = {".yml", ".yaml", ".env", ".example", ".sh", ".toml", ".ini", ".cfg", ".json", ".md", ".conf"}


def _placeholder(value: str) -> bool:
    v = value.strip().strip("'\"")
    return (v == "" or v.startswith(("$", "<", "{{", "%(", "...")) or v.lower() in {"true", "false", "none", "null"}
            or bool(re.fullmatch(r"[A-Z_]+", v)))  # a name such as PASSWORD in docs, not a value


def _scan(text: str, config_like: bool) -> list[str]:
    found = []
    for what, pattern in _SECRET_PATTERNS.items():
        for m in pattern.finditer(text):
            if what == "password in a URL" and _placeholder(m.group(1)):
                continue
            found.append(f"{what}: {m.group(0)[:40]}")
    if config_like:
        for m in _ASSIGNMENT.finditer(text):
            if text[max(0, m.start() - 2):m.start()] == "${":
                continue  # ${NAME:?message} / ${NAME:-default}: a reference to the environment
            if not _placeholder(m.group(2)):
                found.append(f"{m.group(1)} has a literal value")
    return found


def test_credential_scanner_flags_literals_and_passes_references():
    key = "AK" + "IA" + "Q" * 16
    assert _scan(f"aws_access_key_id = {key}", False)
    assert _scan("-----BEGIN RSA " + "PRIVATE KEY-----", False)
    assert _scan("url: postgresql://cdcore:" + "hunter2x@db:5432/mlflow", False)
    assert _scan("POSTGRES_PASSWORD=" + "hunter2x", True) and _scan("AWS_SECRET_ACCESS_KEY: " + "abc123", True)
    for fine in ("POSTGRES_PASSWORD=<generate>", "password: ${POSTGRES_PASSWORD:?set it}", "AWS_SECRET_ACCESS_KEY=$S3_KEY",
                 "url: postgresql://u:${POSTGRES_PASSWORD}@db/mlflow", "--from-literal=backend-store-uri='postgresql://USER:PASSWORD@HOST'",
                 "secretKeyRef:\n  name: cdcore-mlflow", 'echo "AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-$(gen)}"'):
        assert not _scan(fine, True), fine


def test_no_committed_file_contains_a_credential():
    problems = []
    for path in _candidate_files():
        if not path.is_file() or path.stat().st_size > 2_000_000 or "assets" in path.relative_to(REPO).parts:
            continue
        data = path.read_bytes()
        if b"\0" in data[:4096]:
            continue  # binary
        config_like = (path.suffix in _CONFIG_SUFFIXES or path.name == "Dockerfile" or path.name.startswith(".env"))
        problems += [f"{path.relative_to(REPO)}: {p}" for p in _scan(data.decode("utf-8", errors="replace"), config_like)]
    assert not problems, "credential-looking values:\n" + "\n".join(problems)


# ----- helpers for the server tests ------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """The infra/local scripts with their own state folder and free ports; stops what it started."""

    def __init__(self, **extra: str):
        # world-traversable parent: PostgreSQL runs as the postgres user when the tests run as root
        self.dir = Path(tempfile.mkdtemp(prefix="cdcore-stack-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.env = os.environ.copy()
        self.env.pop("PREFECT_API_URL", None)
        self.env.update({
            "CDCORE_STACK_DIR": str(self.dir), "CDCORE_PG_PORT": str(_free_port()), "CDCORE_S3_PORT": str(_free_port()),
            "CDCORE_MLFLOW_PORT": str(_free_port()), "CDCORE_PREFECT_PORT": str(_free_port()),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHON": sys.executable,
            "CDCORE_START_TIMEOUT": "180", **extra})
        self.started: list[str] = []
        self.timings: dict[str, float] = {}

    def run(self, script: str, timeout: float = 240) -> str:
        t0 = time.perf_counter()
        out = subprocess.run(["bash", str(LOCAL / script)], env=self.env, capture_output=True, text=True,
                             timeout=timeout)
        self.timings[script] = time.perf_counter() - t0
        assert out.returncode == 0, f"{script} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out.stderr

    def start(self, service: str) -> None:
        self.started.append(service)
        self.run(f"start-{service}.sh")

    def client_env(self) -> dict[str, str]:
        """The environment env.sh gives a client of the running services."""
        out = subprocess.run(["bash", "-c", f'. "{LOCAL / "env.sh"}" && env -0'], env=self.env, capture_output=True,
                             check=True)
        return dict(item.split("=", 1) for item in out.stdout.decode().split("\0") if "=" in item)

    def pids(self) -> list[int]:
        pids = [int(p.read_text()) for p in (self.dir / "run").glob("*.pid")] if (self.dir / "run").exists() else []
        pg = self.dir / "pg" / "postmaster.pid"
        if pg.exists():
            pids.append(int(pg.read_text().split()[0]))
        return pids

    def stop(self) -> None:
        pids = self.pids()
        for service in reversed(self.started):
            t0 = time.perf_counter()
            subprocess.run(["bash", str(LOCAL / f"stop-{service}.sh")], env=self.env, capture_output=True, timeout=120)
            self.timings[f"stop-{service}.sh"] = time.perf_counter() - t0
        self.started.clear()
        for pid in pids:  # every recorded process is gone (zombies awaiting their reaper count as gone)
            try:
                state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
            except (FileNotFoundError, ProcessLookupError):
                continue
            assert state == "Z", f"process {pid} still running after the stop scripts"
        shutil.rmtree(self.dir, ignore_errors=True)


def _post(url: str, body: dict) -> object:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _require(*tools: str) -> None:
    for tool in tools:
        if _tool(tool) is None:
            pytest.skip(f"{tool} not installed")


def _tiny_project(tmp: Path, experiment: str, datasets: tuple[str, ...] = ("vmf",)) -> Path:
    from tests.conftest import tiny_params_yaml

    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "assets" / "earth").mkdir(parents=True)
    shutil.copy(REPO / "assets" / "earth" / "volcano.csv", tmp / "assets" / "earth" / "volcano.csv")
    params = yaml.safe_load(tiny_params_yaml())
    params["datasets"] = {k: v for k, v in params["datasets"].items() if k in datasets}
    params["tracking"]["experiment"] = experiment
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp


# ----- Prefect server + worker: a scheduled run of the deployment from prefect.yaml -------------
@pytest.mark.slow
def test_prefect_server_runs_the_scheduled_deployment_on_a_process_worker(tmp_path):
    _require("prefect")
    stack = Stack(CDCORE_PREFECT_DB="sqlite", PREFECT_WORKER_QUERY_SECONDS="3", PREFECT_UI_ENABLED="false",
                  MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    project = _tiny_project(tmp_path / "project", "tiny-scheduled")
    from mlflow.tracking import MlflowClient

    MlflowClient(stack.env["MLFLOW_TRACKING_URI"]).create_experiment(  # artifacts in tmp, not the repo (P6)
        "tiny-scheduled", artifact_location=(tmp_path / "artifacts").as_uri())
    try:
        stack.start("prefect")
        stack.start("worker")
        env = {**stack.client_env(), "PROJECT_DIR": str(REPO), "PREFECT_HOME": str(tmp_path / "cli")}
        api = env["PREFECT_API_URL"]
        params = {"params_path": "params.yaml", "root": str(project), "datasets": ["vmf"]}
        t0 = time.perf_counter()
        out = subprocess.run([_tool("prefect"), "--no-prompt", "deploy", "--prefect-file", str(REPO / "prefect.yaml"),
                              "--name", "nightly", "--interval", "10", "--params", json.dumps(params)],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        stack.timings["prefect deploy"] = time.perf_counter() - t0
        [dep] = _post(f"{api}/deployments/filter", {"deployments": {"name": {"any_": ["nightly"]}}})
        kinds = {s["schedule"].get("cron") or s["schedule"].get("interval") for s in dep["schedules"]}
        assert kinds == {"0 2 * * *", 10.0}  # prefect.yaml's nightly cron and the test's 10 s interval
        assert dep["work_pool_name"] == "cdcore-process" and dep["parameters"]["root"] == str(project)
        assert dep["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]

        deadline = time.time() + 200
        done = None
        while time.time() < deadline and done is None:
            runs = _post(f"{api}/flow_runs/filter", {"deployments": {"id": {"any_": [dep["id"]]}},
                                                     "sort": "EXPECTED_START_TIME_ASC"})
            for r in runs:
                if r["state_type"] in ("FAILED", "CRASHED"):
                    log = (stack.dir / "log" / "worker.log").read_text()[-4000:]
                    pytest.fail(f"scheduled run {r['name']} {r['state_type']}: {r['state']['message']}\n{log}")
                if r["state_type"] == "COMPLETED":
                    done = r
            time.sleep(2)
        assert done is not None, "no scheduled run completed within 200 s:\n" + (stack.dir / "log" / "worker.log").read_text()[-4000:]
        assert done["auto_scheduled"] is True  # created by the scheduler, not `prefect deployment run`
        assert done["work_pool_name"] == "cdcore-process"
        stack.timings["deploy -> scheduled run completed"] = time.perf_counter() - t0
        summary = json.loads((project / "reports" / "summary.json").read_text())
        assert {r["dataset"] for r in summary["rows"]} == {"vmf"}
    finally:
        stack.stop()
        print("timings (s):", {k: round(v, 1) for k, v in stack.timings.items()})


# ----- PostgreSQL + S3 + MLflow server + DVC remote: track, push, promote, load by alias -----------
def _pg_available() -> bool:
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")) if Path("/usr/lib/postgresql").exists() else []
    return bool(bins) or bool(os.environ.get("CDCORE_PG_BIN"))


@pytest.mark.slow
def test_mlflow_on_postgres_and_s3_with_dvc_remote_promotes_and_serves_the_champion(tmp_path):
    if not _pg_available():
        pytest.skip("PostgreSQL server not installed (apt-get install -y postgresql-15)")
    if os.geteuid() == 0 and subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
        pytest.skip("running as root but there is no postgres user to run the server as")
    _require("moto_server", "mlflow", "dvc", "git")
    for module, package in (("psycopg2", "psycopg2-binary"), ("boto3", "boto3"), ("dvc_s3", "dvc-s3")):
        pytest.importorskip(module, reason=f"{package} not installed")
    import boto3

    stack = Stack()
    project = _tiny_project(tmp_path / "project", "tiny-served")
    for item in ("dvc.yaml", "cdcore", "flows"):  # dvc.lock records these as the stages' dependencies
        src = REPO / item
        (shutil.copytree(src, project / item, ignore=shutil.ignore_patterns("__pycache__"))
         if src.is_dir() else shutil.copy(src, project / item))
    try:
        for service in ("postgres", "s3", "mlflow"):
            stack.start(service)
        env = {**stack.client_env(), "PREFECT_HOME": os.environ["PREFECT_HOME"], "CDCORE_EXPERIMENT": "tiny-served"}
        env.pop("PREFECT_API_URL", None)  # the flow runs on Prefect's temporary server here
        assert env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{stack.env['CDCORE_MLFLOW_PORT']}"

        def sh(*cmd: str, timeout: float = 600) -> str:
            t0 = time.perf_counter()
            out = subprocess.run(list(cmd), cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
            label = " ".join(Path(c).name if "/" in c else c for c in cmd[:3]) if "-c" not in cmd else "python -c"
            stack.timings[label] = stack.timings.get(label, 0.0) + time.perf_counter() - t0
            assert out.returncode == 0, f"{cmd}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
            return out.stdout

        git = ["git", "-c", "user.name=cdcore-test", "-c", "user.email=test@invalid"]
        sh("git", "init", "-q")
        sh(_tool("dvc"), "init", "-q")
        sh(_tool("dvc"), "config", "core.analytics", "false")
        sh(_tool("dvc"), "remote", "add", "-d", "store", f"s3://{stack.env.get('CDCORE_DVC_BUCKET', 'cdcore-dvc')}/cdcore")
        sh(_tool("dvc"), "remote", "modify", "store", "endpointurl", env["CDCORE_S3_URL"])

        sh(_tool("cdcore"), "run", "--dataset", "vmf")  # the pipeline, tracked on the MLflow server
        sh(_tool("dvc"), "commit", "-f")                 # record the flow's outputs in dvc.lock
        sh(*git, "add", "-A")
        sh(*git, "commit", "-qm", "tiny run")
        sh(_tool("dvc"), "push")
        commit = sh("git", "rev-parse", "HEAD").strip()

        s3 = boto3.client("s3", endpoint_url=env["CDCORE_S3_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
        dvc_keys = [o["Key"] for o in s3.list_objects_v2(Bucket="cdcore-dvc").get("Contents", [])]
        ml_keys = [o["Key"] for o in s3.list_objects_v2(Bucket="cdcore-mlflow").get("Contents", [])]
        assert len(dvc_keys) >= 5, dvc_keys
        assert any(k.endswith("score.pt") for k in ml_keys) and any("MLmodel" in k for k in ml_keys), ml_keys[:20]

        # promote the registered candidate, then a second registration that does not beat it
        code = textwrap.dedent("""
            import json, sys
            from flows.promote import promote_dataset
            print(json.dumps(promote_dataset("vmf", root=sys.argv[1]).as_dict()))
        """)
        first = json.loads(sh(sys.executable, "-c", code, str(project)).strip().splitlines()[-1])
        assert first["promoted"] and first["champion_after"] == "1", first
        sh(_tool("cdcore"), "register", "--dataset", "vmf")  # unchanged weights: keeps version 1 (issue 28)
        copy = textwrap.dedent("""
            from mlflow.tracking import MlflowClient
            c = MlflowClient()
            assert len(c.search_model_versions("name = 'tiny-landing-vmf'")) == 1
            v1 = c.get_model_version("tiny-landing-vmf", "1")
            tags = {k: v for k, v in v1.tags.items() if not k.startswith("promotion.")}
            v2 = c.create_model_version("tiny-landing-vmf", v1.source, v1.run_id, tags=tags, model_id=v1.model_id or v1.source.rsplit("/", 1)[-1])
            c.set_registered_model_alias("tiny-landing-vmf", "candidate", v2.version)
        """)
        sh(sys.executable, "-c", copy)
        second = json.loads(sh(sys.executable, "-c", code, str(project)).strip().splitlines()[-1])
        assert not second["promoted"] and second["candidate"] == "2" and "does not beat" in second["reason"]

        # a fresh process loads the champion by alias through the server (artifacts from S3)
        load = textwrap.dedent("""
            import json, mlflow, numpy as np, pandas as pd
            from mlflow.tracking import MlflowClient
            m = mlflow.pyfunc.load_model("models:/tiny-landing-vmf@champion")
            x = m.predict(pd.DataFrame({"n": [64], "seed": [1]})).astype(np.float64)
            mv = MlflowClient().get_model_version_by_alias("tiny-landing-vmf", "champion")
            params = json.load(open(mlflow.artifacts.download_artifacts(run_id=mv.run_id,
                                                                        artifact_path="lineage/params.json")))
            print(json.dumps({"shape": list(x.shape), "viol": float(np.abs(np.linalg.norm(x, axis=1) - 1).max()),
                              "version": str(mv.version), "tags": mv.tags, "params": params}))
        """)
        got = json.loads(sh(sys.executable, "-c", load).strip().splitlines()[-1])
        assert got["shape"] == [64, 3] and got["viol"] <= 1e-5 and got["version"] == "1"
        lock = yaml.safe_load((project / "dvc.lock").read_text())
        data_md5 = next(o["md5"] for o in lock["stages"]["data@vmf"]["outs"] if o["path"] == "data/vmf.h5")
        tags = got["tags"]
        assert tags["dvc.data_md5"] == data_md5 and tags["git.commit"] == commit and tags["git.dirty"] == "false"
        assert tags["promotion.outcome"] == "promoted" and got["params"]["train"]["steps"] == 40

        # the registry really lives in PostgreSQL
        psql = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))
        if psql:
            rows = subprocess.run([str(psql[-1]), "-h", "127.0.0.1", "-p", stack.env["CDCORE_PG_PORT"], "-U", "postgres",
                                   "-d", "mlflow", "-tAc", "SELECT alias, version FROM registered_model_aliases "
                                   "WHERE name = 'tiny-landing-vmf' ORDER BY alias"],
                                  env={**env, "PGPASSWORD": env["CDCORE_PG_PASSWORD"]}, capture_output=True, text=True)
            assert "champion|1" in rows.stdout.split() and "candidate|2" in rows.stdout.split(), rows.stdout + rows.stderr

        # DVC round trip: the data come back from S3 into an empty cache
        (project / "data" / "vmf.h5").unlink()
        shutil.rmtree(project / ".dvc" / "cache")
        sh(_tool("dvc"), "pull", "data@vmf")
        import hashlib

        assert hashlib.md5((project / "data" / "vmf.h5").read_bytes()).hexdigest() == data_md5
    finally:
        stack.stop()
        print("timings (s):", {k: round(v, 1) for k, v in stack.timings.items()})
