"""dvc.yaml: every stage depends on the code it runs and on no other method's code (issue 23)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def stage_deps() -> dict[str, list[str]]:
    from dvc.repo import Repo

    repo = Repo(str(REPO))
    try:
        return {st.addressing: [d.def_path for d in st.deps] for st in repo.index.stages}
    finally:
        repo.close()


def _covers(deps: list[str], path: str) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def test_every_module_of_the_library_and_the_flows_is_a_dependency_of_some_stage(stage_deps):
    modules = [str(p.relative_to(REPO)) for p in sorted((REPO / "cdcore").rglob("*.py"))]
    modules += [str(p.relative_to(REPO)) for p in sorted((REPO / "flows").rglob("*.py"))]
    every = [d for deps in stage_deps.values() for d in deps]
    missing = [m for m in modules if not _covers(every, m)]
    assert not missing, f"no stage of dvc.yaml depends on {missing}"
    for deps in stage_deps.values():
        assert all((REPO / d).exists() or d.startswith(("data/", "mirrors/", "models/", "samples/", "reports/",
                                                         "registry/")) for d in deps)


@pytest.mark.parametrize("method,other", [("landing", "dual"), ("landing", "namm"), ("namm", "dual"),
                                          ("dual", "namm")])
def test_a_file_named_for_one_method_is_no_dependency_of_another_methods_model_stages(stage_deps, method, other):
    """Editing a dual file leaves train@earthquake up to date; a NAMM file marks NAMM stages only."""
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    name = next(n for n, ds in params["datasets"].items() if ds.get("method") == method)
    files = [str(p.relative_to(REPO)) for root in ("cdcore", "flows") for p in (REPO / root).rglob("*.py")
             if other in p.relative_to(REPO).as_posix()]
    assert files
    for stage in ("data", "mirror", "train", "sample", "evaluate"):
        deps = stage_deps[f"{stage}@{name}"]
        hit = [f for f in files if _covers(deps, f)]
        assert not hit, f"{stage}@{name} depends on {other}'s {hit}"


def test_every_data_set_names_its_method_for_dvc(stage_deps):
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert all("method" in ds for ds in params["datasets"].values())
    assert Path(REPO / "flows" / "stages" / "landing.py").is_file() and "train@earthquake" in stage_deps
