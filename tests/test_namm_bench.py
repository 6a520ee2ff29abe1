"""`cdcore bench namm`: the vanilla-vs-NAMM harness at a tiny scale, its JSON report and the CLI branch."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from cdcore.namm import bench as nb

# seconds-sized: a handful of optimiser and sampling steps on tiny images
TINY = replace(
    nb.CI, name="tiny", n_train=24, n_test=12, n_samples=12, namm_steps=3, dm_steps=3, sample_steps=4,
    counter_n=32, counter_steps=3,
    problem_kw={**nb.CI.problem_kw, "burgers": dict(nx=8, nt=8), "total_brightness": dict(image=8)},
    namm_kw={p: {**kw, "steps": 3} for p, kw in nb.CI.namm_kw.items()},  # the ci NAMM settings, 3 steps
)

DOCUMENTED = {"problem", "model", "constraint_mean", "constraint_median", "mmd", "wall_s", "peak_mem_mb",
              "constraint_mean_normalised", "cycle_error", "n_samples", "steps", "seed", "device", "image"}


def _check_report(report: dict, problems: list[str]) -> None:
    assert [r["problem"] for r in report["rows"]] == [p for p in problems for _ in nb.MODELS]
    assert [r["model"] for r in report["rows"]] == list(nb.MODELS) * len(problems)
    for r in report["rows"]:
        assert DOCUMENTED <= set(r)
        assert r["constraint_mean"] >= 0 and r["constraint_median"] >= 0 and r["mmd"] == r["mmd"]
        assert r["wall_s"] > 0 and r["n_samples"] == TINY.n_samples
        assert 0 <= r["constraint_mean_normalised"] <= 1
        assert (r["cycle_error"] is None) == (r["model"] == "vanilla")
    assert set(report["summary"]) == set(problems)
    for s in report["summary"].values():
        assert {"constraint_ratio", "mmd_ratio", "constraint_pass", "mmd_pass", "data_constraint_mean"} <= set(s)


def test_harness_writes_json_and_histogram(tmp_path):
    problems = ["total_brightness", "burgers"]
    report = nb.run_suite(TINY, "cpu", problems, tmp_path, log=lambda s: None)
    _check_report(report, problems)
    on_disk = json.loads((tmp_path / "reports" / "bench" / "namm.json").read_text())
    _check_report(on_disk, problems)
    assert on_disk["rows"][0]["image"] == [8, 8, 1] and on_disk["rows"][0]["steps"]["sample"] == 4
    assert (tmp_path / "reports" / "bench" / "namm_constraint_hist.png").stat().st_size > 1000
    table = nb.format_report(report)
    assert "total_brightness" in table and ("PASS" in table or "FAIL" in table)


def test_paper_scale_uses_the_reference_epochs():
    s = nb.steps_for(nb.PAPER, "kolmogorov")
    assert s == {"namm": 100 * 625, "mdm": 700 * 157, "dm": 2000 * 157}
    assert nb.steps_for(nb.CI, "count") == {"namm": nb.CI.namm_steps, "mdm": nb.CI.dm_steps, "dm": nb.CI.dm_steps}


def test_ci_per_problem_namm_settings_reach_the_fit_only():
    # burgers: its own NAMM steps; the score models (vanilla and mirror) keep the shared steps
    assert nb.steps_for(nb.CI, "burgers") == {"namm": nb.CI.namm_kw["burgers"]["steps"], "mdm": nb.CI.dm_steps,
                                              "dm": nb.CI.dm_steps}
    res = nb.run_problem("burgers", TINY, torch.device("cpu"), log=lambda s: None)
    by = {r["model"]: r for r in res["rows"]}
    assert by["namm"]["steps"] == {"namm": 3, "score": TINY.dm_steps, "sample": TINY.sample_steps}
    assert by["vanilla"]["steps"]["score"] == by["namm"]["steps"]["score"]
    assert by["namm"]["namm_cfg"]["lam_constr"] == nb.CI.namm_kw["burgers"]["lam_constr"]
    assert by["namm"]["namm_cfg"]["lr"] == nb.CI.namm_kw["burgers"]["lr"]
    with pytest.raises(ValueError, match="NammCfg fields"):
        replace(nb.CI, namm_kw={"burgers": {"dm_steps": 10}})  # score-model keys never go through namm_kw
    with pytest.raises(ValueError, match="unknown problem"):
        replace(nb.CI, namm_kw={"nope": {}})


def test_cli_bench_namm_exits_0_and_writes_the_report(tmp_path, monkeypatch):
    from flows.cli import app

    monkeypatch.setenv("CDCORE_TRACKING", "off")
    monkeypatch.setitem(nb.SCALES, "ci", TINY)
    res = CliRunner().invoke(app, ["bench", "namm", "--scale", "ci", "--device", "cpu", "--only",
                                   "total_brightness", "--root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "total_brightness" in res.output and "NAMM/vanilla" in res.output
    report = json.loads((tmp_path / "reports" / "bench" / "namm.json").read_text())
    _check_report(report, ["total_brightness"])


@pytest.mark.parametrize("args,msg", [(["--only", "nope"], "unknown NAMM problem"),
                                      (["--scale", "huge"], "--scale")])
def test_cli_bench_namm_refuses_bad_arguments(tmp_path, args, msg):
    from flows.cli import app

    res = CliRunner().invoke(app, ["bench", "namm", "--device", "cpu", "--root", str(tmp_path), *args])
    assert res.exit_code == 2 and msg in res.output
