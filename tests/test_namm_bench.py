"""`cdcore bench namm`: the vanilla-vs-NAMM harness at a tiny scale, its JSON report and the CLI branch."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from cdcore.benchmarks import namm as nb
from cdcore.config import namm as ncfg
from cdcore.methods.namm import fit as namm_fit

# seconds-sized: a handful of optimiser and sampling steps on tiny images
TINY = replace(
    ncfg.CI, name="tiny", n_train=24, n_test=12, n_samples=12, namm_steps=3, dm_steps=3, sample_steps=4,
    counter_n=32, counter_steps=3,
    problem_kw={**ncfg.CI.problem_kw, "burgers": dict(nx=8, nt=8), "total_brightness": dict(image=8)},
    namm_kw={p: {**kw, "steps": 3} for p, kw in ncfg.CI.namm_kw.items()},  # the ci NAMM settings, 3 steps
    finetune_steps={p: 2 for p, n in ncfg.CI.finetune_steps.items() if n},  # the ci fine-tuned problems, 2 steps
    finetune_n=8, finetune_val=4,
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


def test_harness_writes_json_and_histogram(tmp_path, monkeypatch):
    from flows import bench

    problems = ["total_brightness", "burgers", "periodic_texture"]
    report = nb.run_suite(TINY, "cpu", problems, log=lambda s: None)
    _check_report(report, problems)
    figure = report["_figure"]          # the histograms' data, not part of the JSON
    assert list(figure) == problems and all(set(d) == set(nb.MODELS) for d in figure.values())
    assert all(0 < len(d["namm"]) <= TINY.n_samples for d in figure.values())
    # the bench returns the report; flows.bench writes it and its figure under the layout's names
    monkeypatch.setattr(bench, "run_suite", lambda *a, **k: report)
    assert bench.run_namm("ci", "cpu", problems, tmp_path, log=lambda s: None) is report
    on_disk = json.loads((tmp_path / "reports" / "bench" / "namm.json").read_text())
    _check_report(on_disk, problems)
    assert "_figure" not in report and "_figure" not in on_disk
    # the ci fine-tuning (periodic_texture, here 2 steps) and the ci f of total_brightness reach the written rows
    rows = {(r["problem"], r["model"]): r for r in on_disk["rows"]}
    assert ncfg.CI.finetune_steps["periodic_texture"] > 0
    ft = rows[("periodic_texture", "namm")]
    assert ft["steps"]["finetune"] == 2 and ft["finetune"]["steps"] == 2 and ft["finetune"]["n_fit"] == TINY.finetune_n
    assert ft["finetune"]["lam_cyc"] == ncfg.CI.finetune_kw["periodic_texture"]["lam_cyc"]
    assert rows[("burgers", "namm")]["steps"]["finetune"] == 0 and rows[("burgers", "namm")]["finetune"] == {}
    assert rows[("total_brightness", "namm")]["namm_cfg"]["f_residual"] is False
    assert on_disk["rows"][0]["image"] == [8, 8, 1] and on_disk["rows"][0]["steps"]["sample"] == 4
    assert (tmp_path / "reports" / "bench" / "namm_constraint_hist.png").stat().st_size > 1000
    table = nb.format_report(report)
    assert "total_brightness" in table and ("PASS" in table or "FAIL" in table)


def test_paper_scale_uses_the_reference_epochs():
    s = ncfg.steps_for(ncfg.PAPER, "kolmogorov")
    # fine-tuning: the reference's cumulative 500 epochs minus the 100 NAMM epochs
    assert s == {"namm": 100 * 625, "finetune": 400 * 625, "mdm": 700 * 157, "dm": 2000 * 157}
    assert ncfg.steps_for(ncfg.PAPER, "periodic_texture")["finetune"] == (1000 - 50) * 625
    assert ncfg.steps_for(ncfg.CI, "count") == {"namm": ncfg.CI.namm_steps, "finetune": ncfg.CI.finetune_steps.get("count", 0),
                                            "mdm": ncfg.CI.dm_steps, "dm": ncfg.CI.dm_steps}


def test_ci_per_problem_namm_settings_reach_the_fit_only():
    # burgers: its own NAMM steps; the score models (vanilla and mirror) keep the shared steps
    assert ncfg.steps_for(ncfg.CI, "burgers") == {"namm": ncfg.CI.namm_kw["burgers"]["steps"], "finetune": 0,
                                              "mdm": ncfg.CI.dm_steps, "dm": ncfg.CI.dm_steps}
    res = nb.run_problem("burgers", TINY, torch.device("cpu"), log=lambda s: None)
    by = {r["model"]: r for r in res["rows"]}
    assert by["namm"]["steps"] == {"namm": 3, "finetune": TINY.finetune_steps.get("burgers", 0),
                                   "score": TINY.dm_steps, "sample": TINY.sample_steps}
    assert by["vanilla"]["steps"]["score"] == by["namm"]["steps"]["score"]
    assert by["namm"]["namm_cfg"]["lam_constr"] == ncfg.CI.namm_kw["burgers"]["lam_constr"]
    assert by["namm"]["namm_cfg"]["lr"] == ncfg.CI.namm_kw["burgers"]["lr"]
    with pytest.raises(ValueError, match="NammCfg fields"):
        replace(ncfg.CI, namm_kw={"burgers": {"dm_steps": 10}})  # score-model keys never go through namm_kw
    with pytest.raises(ValueError, match="unknown problem"):
        replace(ncfg.CI, namm_kw={"nope": {}})


def _params(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


@pytest.fixture
def sample_calls(monkeypatch) -> list[tuple[int, int]]:
    """(n, seed) of every mirror/vanilla sampling call the bench makes, in order."""
    calls: list[tuple[int, int]] = []
    real = nb.sample_mdm

    def spy(net, shape, n, steps=1000, seed=0, f=None, sde=None):
        calls.append((n, seed))
        return real(net, shape, n, steps=steps, seed=seed, f=f, sde=sde)

    monkeypatch.setattr(nb, "sample_mdm", spy)
    monkeypatch.setattr(namm_fit, "sample_mdm", spy)   # the fine-tuning of f draws its mirror samples there
    return calls


def test_finetuning_fits_f_on_fresh_mirror_samples_with_g_frozen(sample_calls):
    calls = sample_calls
    off = replace(TINY, finetune_steps={})
    on = replace(TINY, finetune_steps={"total_brightness": 3}, finetune_kw={"total_brightness": {"lam_constr": 0.5}},
                 finetune_n=6, finetune_val=3)  # 9 mirror samples: a count no evaluation draw has
    assert ncfg.steps_for(off, "total_brightness")["finetune"] == 0
    assert ncfg.steps_for(on, "total_brightness")["finetune"] == 3
    quiet = {"log": lambda s: None, "return_models": True}
    base = nb.run_problem("total_brightness", off, torch.device("cpu"), seed=3, **quiet)
    n_base = len(calls)
    tuned = nb.run_problem("total_brightness", on, torch.device("cpu"), seed=3, **quiet)
    new_calls = calls[n_base:]
    # the same models up to the fine-tuning: vanilla + mirror evaluation samples (seed + 1), and one more draw
    # of finetune_n + finetune_val mirror samples with a seed that no evaluation sample uses
    assert calls[:n_base] == [(TINY.n_samples, 4), (TINY.n_samples, 4)]
    assert len(new_calls) == 3 and (TINY.n_samples, 4) in new_calls
    ft = [c for c in new_calls if c[0] == on.finetune_n + on.finetune_val]
    assert len(ft) == 1 and ft[0][1] == 3 + namm_fit.FINETUNE_SEED and ft[0][1] != 4
    # g is frozen, f moved away from the NAMM fit's f
    for a, b in zip(_params(base["models"]["g"]), _params(tuned["models"]["g"])):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(_params(base["models"]["f"]), _params(tuned["models"]["f"])))
    for a, b in zip(_params(base["models"]["mdm"]), _params(tuned["models"]["mdm"])):  # the score model is as before
        assert torch.equal(a, b)
    row = {r["model"]: r for r in tuned["rows"]}
    assert row["namm"]["steps"]["finetune"] == 3 and row["vanilla"]["steps"]["finetune"] == 0
    info = row["namm"]["finetune"]
    assert info["steps"] == 3 and info["n_fit"] == on.finetune_n and info["n_val"] == on.finetune_val
    assert info["lam_constr"] == 0.5  # finetune_kw reaches the fine-tuning only ...
    assert row["namm"]["namm_cfg"]["lam_constr"] == ncfg.task_cfg("total_brightness", "ci").lam_constr  # ... not the fit
    for k in ("val_constr_before", "val_constr_after", "val_mmd_before", "val_mmd_after", "val_constr_mirror"):
        assert info[k] >= 0
    assert row["namm"]["finetune_s"] > 0
    # without fine-tuning nothing is recorded and the vanilla row is unchanged
    b_row = {r["model"]: r for r in base["rows"]}
    assert b_row["namm"]["finetune"] == {} and b_row["namm"]["steps"]["finetune"] == 0
    assert b_row["vanilla"]["constraint_mean"] == row["vanilla"]["constraint_mean"]


def test_finetuning_samples_in_batches_with_seeds_apart_from_evaluation(sample_calls, monkeypatch):
    calls = sample_calls
    on = replace(TINY, finetune_steps={"count": 2}, finetune_n=7, finetune_val=2)
    monkeypatch.setattr(namm_fit, "FINETUNE_CHUNK", 4)
    res = nb.run_problem("count", on, torch.device("cpu"), seed=0, log=lambda s: None)
    ft_calls = [c for c in calls if c[1] != 1]  # evaluation draws: seed + 1
    assert ft_calls == [(4, 7), (4, 1007), (1, 2007)]
    info = {r["model"]: r for r in res["rows"]}["namm"]["finetune"]
    assert info["n_fit"] == 7 and info["n_val"] == 2


def test_finetune_settings_are_checked():
    with pytest.raises(ValueError, match="NammCfg fields"):
        replace(ncfg.CI, finetune_kw={"count": {"dm_lr": 1e-3}})
    with pytest.raises(ValueError, match="unknown problem"):
        replace(ncfg.CI, finetune_steps={"nope": 3})
    with pytest.raises(ValueError, match="negative"):
        replace(ncfg.CI, finetune_steps={"count": -1})


def test_cli_bench_namm_exits_0_and_writes_the_report(tmp_path, monkeypatch):
    from flows.cli import app

    monkeypatch.setenv("CDCORE_TRACKING", "off")
    monkeypatch.setitem(nb.SCALES, "ci", TINY)
    # --experiment prior: the inverse problems (their own ci sizes, minutes) are not this test's subject
    res = CliRunner().invoke(app, ["bench", "namm", "--scale", "ci", "--device", "cpu", "--experiment", "prior",
                                   "--only", "total_brightness", "--root", str(tmp_path)])
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
