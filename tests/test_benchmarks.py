"""The landing benchmark suite: data feasibility, the harness's rows and ratios, and benchmarks in the pipeline."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml

from cdcore import benchmarks
from cdcore.benchmarks.landing import run_benchmark
from cdcore.benchmarks import Scale
from cdcore.config import load_params
from flows import stages
from tests.conftest import REPO, SHARED

PATHS = benchmarks.Paths(assets=REPO / "assets", shared=SHARED if SHARED.is_dir() else None)
TINY = Scale(n_samples=64, train_steps=30, hidden=32, depth=2, batch_size=64)


@pytest.mark.parametrize("name", list(benchmarks.BENCHMARKS))
def test_benchmark_data_satisfy_their_constraint(name):
    b = benchmarks.get(name)
    try:
        train, val, test = b.load(0, PATHS)
    except benchmarks.BenchmarkDataMissing as e:
        pytest.skip(str(e))
    x = torch.as_tensor(np.concatenate([train, val, test]), dtype=torch.float64)
    c = b.make_constraint()
    assert x.shape[1] == c.dim
    tol = 2e-3 if name == "robot_arm" else 1e-4  # the shipped robot paths hold the height to 1e-3 m
    assert float(c.violation(x).max()) < tol
    assert len(test) >= 40


def test_so10_mixture_has_three_modes_on_so10():
    x = benchmarks.so_n_mixture(300, 10, 3, 0.25, seed=0).reshape(-1, 10, 10)
    assert np.allclose(x @ x.transpose(0, 2, 1), np.eye(10), atol=1e-10)
    assert (np.linalg.det(x) > 0).all()
    tr = np.trace(x, axis1=1, axis2=2)
    assert tr.std() > 0.5  # three separated centres give spread traces


def test_reflection_folds_into_the_box_and_keeps_inside_points():
    x = np.array([[0.3, -0.5], [1.2, -1.5], [3.5, -4.2]])
    y = benchmarks.reflect_into_box(x)
    assert np.allclose(y, [[0.3, -0.5], [0.8, -0.5], [-0.5, -0.2]])  # 3.5: walls at 1 then −1; −4.2: at −1 then 1


@pytest.mark.parametrize("name, landing", [("box_gmm", "explicit"), ("box_gmm", "implicit"),
                                           ("polytope_gmm", "implicit"), ("ball_gmm", "implicit")])
def test_underdamped_convex_paths_give_a_kinetic_loss_the_gaussian_kernel_can_fit(name, landing):
    """The kinetic path loss of the data's own forward paths, scored with a zero network, must sit near its ½ N d
    floor. A landing jump to g = −ε read as a speed ε/(σ²Δt) made it explode (implicit: box 2944, ball 18263,
    polytope 5479 per path against 50) until the velocity reconstruction and the residual removed the rows that
    acted during the step (``dynamics.step_active``)."""
    from cdcore.dynamics import forward_paths
    from cdcore.methods.landing import dynamics_from, schedule_from, underdamped_step_loss

    b = benchmarks.get(name)
    train, _, _ = b.load(0, PATHS)
    c, sched = b.make_constraint(), schedule_from(b.ud_schedule)
    dyn = dynamics_from(b.ud_dynamics.model_copy(update={"landing": landing}))
    paths = forward_paths(c, torch.as_tensor(train[:256], dtype=torch.float64), sched, dyn,
                          generator=torch.Generator().manual_seed(0)).paths
    B, N = paths.shape[0], sched.N
    zero = lambda x, v, k: torch.zeros_like(x)  # noqa: E731
    terms = underdamped_step_loss(zero, c, sched, dyn.gamma, paths, torch.arange(B).repeat_interleave(N),
                                  torch.arange(N).repeat(B))
    per_path, floor = float(terms.sum()) / B, 0.5 * N * c.dim
    assert per_path < 1.6 * floor, per_path


@pytest.mark.parametrize("name", ["torus", "ball_gmm"])
def test_harness_runs_every_sampler_with_ratios(name):
    b = replace(benchmarks.get(name), scales={"tiny": TINY})
    b = replace(b, od_schedule=b.od_schedule.model_copy(update={"N": 10}),
                ud_schedule=b.ud_schedule.model_copy(update={"N": 5}))
    res = run_benchmark(b, "tiny", torch.device("cpu"), PATHS, log=lambda s: None)
    samplers = [r["sampler"] for r in res["rows"]]
    expected = ["OLLA", "OLLA-P", "ULLA", "ULLA-P", "ambient+proj"] + (["reflected"] if name == "ball_gmm" else [])
    assert samplers == expected
    by = {r["sampler"]: r for r in res["rows"]}
    for s in ("OLLA", "ULLA"):
        assert by[s]["drop_rate"] == 0.0 and by[s]["violation_max"] < 1e-4
    if name == "ball_gmm":
        assert by["reflected"]["violation_max"] <= 0.0  # rejection never leaves the set
    assert by["ULLA"]["nfe"] == 5 and by["OLLA"]["nfe"] == 10
    assert res["ratios"]["ulla_nfe_over_olla"] == 0.5
    assert res["ratios"]["landing_over_unconstrained_wall"] > 0
    for key in ("olla_quality_from_prior_seeds", "ulla_quality_from_forward_end_seeds"):
        assert len(res["ratios"][key]) == 3 and np.isfinite(res["ratios"][key]).all()


def test_harness_adds_the_same_models_landing_rows_at_another_precision():
    """--precision bf16: OLLA and ULLA of the same models again with the network in bf16, beside the fp32 rows; the
    samples stay on the set and the quality moves by the network's rounding only."""
    b = replace(benchmarks.get("torus"), scales={"tiny": TINY})
    b = replace(b, od_schedule=b.od_schedule.model_copy(update={"N": 10}),
                ud_schedule=b.ud_schedule.model_copy(update={"N": 5}))
    res = run_benchmark(b, "tiny", torch.device("cpu"), PATHS, log=lambda s: None, precision="bf16")
    assert [r["sampler"] for r in res["rows"]][-2:] == ["OLLA bf16", "ULLA bf16"]
    by = {r["sampler"]: r for r in res["rows"]}
    assert by["OLLA"]["precision"] == "fp32" and by["ULLA bf16"]["precision"] == "bf16"
    q = res["ratios"]
    for s in ("OLLA", "ULLA"):
        low = by[f"{s} bf16"]
        assert low["drop_rate"] == 0.0 and low["violation_max"] < 1e-4 and low["nfe"] == by[s]["nfe"]
        assert q[f"{s.lower()}_quality_bf16_minus_fp32"] == low["quality"] - by[s]["quality"]
        assert abs(q[f"{s.lower()}_quality_bf16_minus_fp32"]) < 0.05


def test_forward_end_prior_lies_on_the_set_and_keeps_the_data_law_when_the_forward_is_short():
    """The forward-end start must be the forward chain's terminal law: on Σ, and for a short forward still the
    data's law, which the analytic prior is not; one pool serves every call, drawn without replacement."""
    from cdcore.methods.landing import forward_end_prior, schedule_from

    b = benchmarks.get("torus")
    train, val, test = b.load(0, PATHS)
    c = b.make_constraint()
    short = schedule_from(b.od_schedule.model_copy(update={"T": 0.01, "N": 5}))
    prior = forward_end_prior(c, torch.as_tensor(val), short, b.od_dynamics, pool=400)
    x = prior(400, torch.Generator().manual_seed(0)).double()
    assert len(torch.unique(x, dim=0)) == len(torch.unique(prior(400, torch.Generator().manual_seed(5)), dim=0))
    assert float(c.violation(x).max()) < 1e-5
    ref = np.concatenate([train, val])
    analytic = c.sample_prior(400, generator=torch.Generator().manual_seed(1)).double().numpy()
    resampled = val[np.random.default_rng(0).integers(len(val), size=400)]  # the prior resamples with replacement
    floor = b.quality(resampled, test, ref)
    assert b.quality(x.numpy(), test, ref) - floor < 0.3 * (b.quality(analytic, test, ref) - floor)


def test_harness_starts_a_forward_prior_benchmark_from_the_forward_end():
    """A benchmark whose forward is short (the dipeptide/robot case) must start its samplers from the forward's end
    simulated from the data: with a near-untrained network the samples then keep the data's law; from the analytic
    prior they would stay near the prior. The diagnostic still measures the analytic start on its own. With
    ``selections`` every model is also scored on the validation split from that start during training."""
    b = benchmarks.get("torus")
    short = b.od_schedule.model_copy(update={"T": 0.01, "N": 10})
    b = replace(b, scales={"tiny": replace(TINY, n_samples=400, selections=3)}, prior="forward", od_schedule=short,
                ud_schedule=b.ud_schedule.model_copy(update={"T": 0.01, "N": 5}))
    lines: list[str] = []
    res = run_benchmark(b, "tiny", torch.device("cpu"), PATHS, log=lines.append)
    chosen = [ln for ln in lines if "best validation jsd at step" in ln]
    assert len(chosen) == 3, lines  # od, ud and ambient models, each at one of steps 10, 20, 30
    by = {r["sampler"]: r for r in res["rows"]}
    assert {r["prior"] for r in res["rows"]} == {"forward"}
    analytic = res["ratios"]["olla_quality_from_prior_seeds"]
    for s in ("OLLA", "OLLA-P", "ULLA", "ambient+proj"):
        assert by[s]["quality"] < min(analytic) - 0.05, (s, by[s]["quality"], analytic)


def test_benchmark_selected_in_params_runs_through_the_stages(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["datasets"] = {"torus": {"kind": "benchmark", "benchmark": "torus", "train_steps": 30,
                                    "schedule": {"kind": "linear", "sigma_min": 0.05, "sigma_max": 1.0, "T": 2.0, "N": 10}}}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    p = load_params(project / "params.yaml")
    for stage in (stages.run_data, stages.run_train, stages.run_sample):
        stage(p, "torus", project)
    rows = stages.run_evaluate(p, "torus", project)
    assert {r["sampler"] for r in rows} == {"landing", "projection"}
    landing = next(r for r in rows if r["sampler"] == "landing")
    assert landing["metric"] == "jsd:torus" and landing["violation_max"] < 1e-5 and landing["drop_rate"] == 0
    assert (project / "reports" / "datasets" / "torus_map.png").exists()


def test_forward_end_prior_leaves_out_paths_whose_terminal_projection_failed(monkeypatch):
    """A start off Σ would make the sampler drop that trajectory: failed forward paths never enter the pool, and a
    pool mostly failed is an error that names the settings."""
    from cdcore.dynamics import PathResult
    from cdcore.methods import landing
    from cdcore.methods.landing import sample as landing_sample
    from cdcore.config import DynamicsCfg

    def fake(constraint, x0, schedule, dyn, generator=None, keep_paths=True):
        bad = torch.arange(len(x0)) % fail_every == 0
        return PathResult(x=torch.where(bad.unsqueeze(1), x0 + 100.0, x0), dropped=bad, newton_iters=torch.zeros(len(x0)))

    monkeypatch.setattr(landing_sample, "forward_paths", fake)
    x = torch.randn(50, 3)
    sched = landing.schedule_from(benchmarks.get("earth").od_schedule)
    fail_every = 4
    prior = landing.forward_end_prior(None, x, sched, DynamicsCfg(), pool=200)
    assert prior(150, torch.Generator().manual_seed(0)).abs().max() < 50  # only the survivors' points
    fail_every = 1
    with pytest.raises(landing.DivergenceError, match="forward paths"):
        landing.forward_end_prior(None, x, sched, DynamicsCfg(), pool=200)


def test_forward_prior_reaches_the_pipeline_sampler(project):
    """`prior: forward` in params.yaml starts the sample stage from the forward's end of the training split (the
    dipeptide and robot benchmarks' default): with a short forward the samples keep the data's law, far below
    the analytic prior's score, and changing the choice re-runs the stage."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    short = {"kind": "linear", "sigma_min": 0.05, "sigma_max": 1.0, "T": 0.01, "N": 10}
    params["datasets"] = {"torus": {"kind": "benchmark", "benchmark": "torus", "train_steps": 30, "prior": "forward",
                                    "schedule": short}}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    p = load_params(project / "params.yaml")
    assert p.prior_for("torus") == "forward"
    for stage in (stages.run_data, stages.run_train, stages.run_sample):
        stage(p, "torus", project)
    rows = {r["sampler"]: r for r in stages.run_evaluate(p, "torus", project)}
    for r in rows.values():
        assert r["score"] < r["score_reference"] - 0.05 and r["violation_max"] < 1e-5, r
    params["datasets"]["torus"]["prior"] = "analytic"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    analytic = load_params(project / "params.yaml")
    assert stages.fp_sample(analytic, "torus", project) != stages.fp_sample(p, "torus", project)


def test_benchmark_prior_defaults_and_rejects_unknown_values():
    base = {"kind": "benchmark"}
    from cdcore.config import BenchmarkDataset

    assert benchmarks.get("dipeptide").prior == "forward" and benchmarks.get("robot_arm").prior == "forward"
    assert benchmarks.get("earth").prior == "analytic"
    with pytest.raises(ValueError, match="prior"):
        BenchmarkDataset(**base, benchmark="dipeptide", prior="data")


def test_bench_rows_reach_mlflow_under_names_it_accepts():
    """Sampler names like ``ambient+proj`` hold a character MLflow refuses in a metric name; the harness logs
    every row under a cleaned name instead of failing after the benchmark ran."""
    import mlflow

    from flows import tracking
    from flows.bench import _log_rows

    result = {"benchmark": "naming-check", "ratios": {"projection_over_landing_wall": 2.5, "olla_seeds": [0.1, 0.2]},
              "rows": [{"sampler": "ambient+proj", "wall_s": 0.25, "device": "cpu"},
                       {"sampler": "OLLA", "wall_s": 0.5, "device": "cpu"}]}
    _log_rows(result, None)
    runs = mlflow.search_runs(experiment_names=["cdcore-bench"], filter_string="tags.`mlflow.runName` LIKE '%naming-check%'",
                              output_format="list")
    assert runs, "no bench run logged"
    m = runs[0].data.metrics
    assert m[tracking.metric_key("ambient+proj.wall_s")] == 0.25 and m["OLLA.wall_s"] == 0.5
    assert m["ratio.projection_over_landing_wall"] == 2.5
    assert "ratio.olla_seeds" not in m  # per-seed lists stay in landing.json; MLflow takes scalars


def test_a_failing_benchmark_keeps_the_others_rows_and_is_named(tmp_path, monkeypatch):
    """A benchmark that raises is recorded under ``failed`` with its error; the rows of the benchmarks before and
    after it are written to landing.json all the same."""
    import json

    from cdcore.benchmarks.landing import format_report
    from flows.bench import run_all

    ok = replace(benchmarks.get("ball_gmm"), scales={"ci": TINY})
    ok = replace(ok, od_schedule=ok.od_schedule.model_copy(update={"N": 10}),
                 ud_schedule=ok.ud_schedule.model_copy(update={"N": 5}))

    def broken_load(seed, paths):
        raise RuntimeError("simulated loader crash")

    broken = replace(ok, name="broken", load=broken_load)
    ok2 = replace(ok, name="ball_gmm_again")
    monkeypatch.setitem(benchmarks.BENCHMARKS, "ball_gmm", ok)
    monkeypatch.setitem(benchmarks.BENCHMARKS, "broken", broken)
    monkeypatch.setitem(benchmarks.BENCHMARKS, "ball_gmm_again", ok2)
    report = run_all("ci", "cpu", ["ball_gmm", "broken", "ball_gmm_again"], tmp_path)
    saved = json.loads((tmp_path / "reports" / "bench" / "landing.json").read_text())
    assert saved["failed"] == {"broken": "RuntimeError: simulated loader crash"}
    assert {r["benchmark"] for r in saved["rows"]} == {"ball_gmm", "ball_gmm_again"}
    assert set(saved["ratios"]) == {"ball_gmm", "ball_gmm_again"}
    assert "FAILED broken" in format_report(report)
    assert (tmp_path / "reports" / "bench" / "landing.png").stat().st_size > 10_000  # the overview plot, drawn


@pytest.mark.parametrize("name,hidden,lr", [("earth", 512, 2e-3), ("so10_3w", 1024, 5e-4), ("so10_5w", 1024, 2e-3),
                                            ("torus", 256, 2e-3), ("dipeptide", 1024, 2e-3), ("robot_arm", 1024, 3e-3)])
def test_paper_scale_trains_the_released_network_and_learning_rate(name, hidden, lr):
    """landing.md §1.7: MLP 5 × width per task, Adam lr 2e-3 except SO(10) 3w (5e-4) and the robot (3e-3)."""
    b = benchmarks.get(name)
    assert (b.model_cfg("paper").hidden, b.model_cfg("paper").depth) == (hidden, 5)
    assert b.train_cfg("paper").lr == lr
    assert b.train_cfg("ci").lr == 2e-3  # ci keeps one learning rate across benchmarks


def test_prior_diagnostic_mmd_sees_the_earth_forwards_unmixed():
    """The released earth horizons leave 27 % (OD) / 37 % (UD) of the data's mean direction at the forward's end, which
    the 30 × 30 lat/lon JSD at 1000 samples cannot tell from uniform; the diagnostic's kernel MMD² must, and must
    put a four-times-longer (mixed) forward level with two prior draws."""
    from cdcore.dynamics import forward_paths
    from cdcore.methods.landing import dynamics_from, schedule_from
    from cdcore.metrics import mmd_rbf

    b = benchmarks.get("earth")
    train, _, _ = b.load(0, PATHS)
    c = b.make_constraint()
    g = torch.Generator().manual_seed(0)
    x = torch.as_tensor(train[:1000], dtype=torch.float64)
    pa, pb = (c.sample_prior(1000, generator=g).double().numpy() for _ in range(2))
    floor = mmd_rbf(pa, pb)
    for sched, dyn in ((b.od_schedule, b.od_dynamics), (b.ud_schedule, b.ud_dynamics)):
        for factor, unmixed in ((1, True), (4, False)):
            s = schedule_from(sched.model_copy(update={"T": sched.T * factor}))
            ends = forward_paths(c, x, s, dynamics_from(dyn), generator=g, keep_paths=False).x.numpy()
            mmd = mmd_rbf(ends, pa)
            assert (mmd > 5 * floor) if unmixed else (mmd < 2 * floor), (dyn.kind, factor, mmd, floor)
