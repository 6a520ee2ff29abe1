"""Constrained inverse problems with NAMM: operators, DPS / CG-DPS / Mirror DPS, the selection rule, the suite."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from cdcore.benchmarks import namm as nb
from cdcore.config import namm as ncfg
from cdcore.benchmarks import namm_dps as db
from cdcore.methods.namm import inverse as inv
from cdcore.dynamics.schedules import VPSDE
from cdcore.methods.namm.sample import mirror_dps
from cdcore.constraints.images import BrightnessConstraint, tile_states
from cdcore.data.images import make_problem
from cdcore.constraints.images import nchw_to_flat

SIGMA = 0.2


class GaussEps(nn.Module):
    """The exact ε-predictor of the prior x0 ~ N(μ, τ² I) under the VP-SDE: E[ε | x_t]."""

    def __init__(self, mu: float, tau: float) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # mirror_dps reads the device off the parameters
        self.mu, self.tau, self.sde = mu, tau, VPSDE()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = (v.view(-1, 1, 1, 1) for v in self.sde.marginal(t))
        return s * (x - a * self.mu) / (a**2 * self.tau**2 + s**2) + 0 * self.anchor


def _gauss_case():
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[:, :, :2] = True  # observe the left half
    obs = inv.Observation("toy", mask, "left half")
    g = torch.Generator().manual_seed(0)
    x_true = 0.5 + torch.randn(1, 1, 4, 4, generator=g)
    y = obs(x_true) + SIGMA * torch.randn(1, obs.m, generator=g)
    return obs, x_true, y


# ------------------------------------------------------------------------------------------------------------
# measurement operators
# ------------------------------------------------------------------------------------------------------------
def test_burgers_observes_the_first_eighth_of_the_time_columns():
    for shape, k in [((64, 64, 1), 8), ((16, 16, 1), 2), ((8, 8, 1), 1)]:
        obs = inv.burgers_observation(shape)
        H, W, C = shape
        assert obs.mask.shape == (C, H, W) and obs.m == k * H
        assert bool(obs.mask[..., :k].all()) and not bool(obs.mask[..., k:].any())
    p = make_problem("burgers", n=3, nx=16, nt=16)
    x = torch.from_numpy(p.x).permute(0, 3, 1, 2)
    obs = inv.make_observation("burgers", p)
    y = obs(x)
    assert y.shape == (3, 32)
    torch.testing.assert_close(y, x[..., :2].reshape(3, -1))
    img = obs.image(y)
    assert img.shape == x.shape and torch.isnan(img[..., 2:]).all()
    torch.testing.assert_close(img[..., :2], x[..., :2])


def test_kolmogorov_paper_layout_observes_states_1_and_8_both_channels():
    states = torch.arange(8, dtype=torch.float32).view(1, 8, 1, 1, 1).expand(1, 8, 4, 4, 2)
    img = tile_states(states, 2, 4).permute(0, 3, 1, 2)  # (1, 2, 8, 16): pixel value = state index
    obs = inv.kolmogorov_observation((8, 16, 2), rows=2, cols=4)
    y = obs(img)
    assert obs.m == 2 * 2 * 16
    assert sorted(set(y.flatten().tolist())) == [0.0, 7.0]
    assert int((y == 0).sum()) == int((y == 7).sum()) == 32  # both channels of each state


def test_kolmogorov_single_state_observes_blocks_1_and_8_of_a_2x4_grid():
    obs = inv.kolmogorov_observation((16, 16, 2), rows=1, cols=1)
    assert obs.m == 2 * 2 * 8 * 4  # two 8×4 blocks, both channels: a quarter of the image
    m = obs.mask
    assert bool(m[:, :8, :4].all()) and bool(m[:, 8:, 12:].all()) and int(m.sum()) == obs.m
    assert "blocks 1 and 8" in obs.description
    with pytest.raises(KeyError):
        inv.make_observation("periodic_texture", make_problem("periodic_texture", n=2, tile=4))


def test_observe_adds_seeded_noise_of_level_sigma():
    obs = inv.burgers_observation((64, 64, 1))
    x = torch.zeros(50, 1, 64, 64)
    y = inv.observe(obs, x, SIGMA, seed=3)
    assert abs(float(y.std()) - SIGMA) < 0.01
    torch.testing.assert_close(y, inv.observe(obs, x, SIGMA, seed=3))


# ------------------------------------------------------------------------------------------------------------
# the samplers
# ------------------------------------------------------------------------------------------------------------
def test_dps_with_an_exact_gaussian_prior_recovers_the_linear_observation():
    obs, x_true, y = _gauss_case()
    net = GaussEps(0.5, 1.0)
    kw = dict(shape=(1, 4, 4), n=64, sigma_y=SIGMA, steps=100, mirror=False, zeta_schedule="sqrt_abar")
    xs = mirror_dps(net, None, obs, y, zeta=0.1, **kw)
    prior = mirror_dps(net, None, obs, y, zeta=0.0, **kw)
    post_mean = (y + 0.5 * SIGMA**2) / (1 + SIGMA**2)  # τ = 1: analytic posterior mean of the observed pixels
    assert float((obs(xs).mean(0) - post_mean).abs().max()) < 0.15
    assert float((obs(prior).mean(0) - post_mean).abs().max()) > 0.5  # without the guidance it is not recovered
    misfit = float((obs(xs) - y).pow(2).mean().sqrt())
    assert misfit < 1.5 * SIGMA < float((obs(prior) - y).pow(2).mean().sqrt())
    free = xs[:, ~obs.mask]  # unobserved pixels keep the prior N(0.5, 1)
    assert abs(float(free.mean()) - 0.5) < 0.3 and 0.7 < float(free.std()) < 1.3


def test_constraint_guidance_lowers_the_constraint_distance():
    obs, _, y = _gauss_case()
    net = GaussEps(0.5, 1.0)
    con = BrightnessConstraint(image=4, total=8.0)
    kw = dict(shape=(1, 4, 4), n=64, sigma_y=SIGMA, zeta=0.1, steps=100, mirror=False, zeta_schedule="sqrt_abar",
              seed=5)
    dps = mirror_dps(net, None, obs, y, **kw)
    cg = mirror_dps(net, None, obs, y, constraint=con, constraint_weight=0.3, constraint_reduction="sum", **kw)
    d_dps = con.distance(nchw_to_flat(dps)).mean()
    d_cg = con.distance(nchw_to_flat(cg)).mean()
    assert float(d_cg) < 0.6 * float(d_dps)
    assert float((obs(cg) - y).pow(2).mean().sqrt()) < 1.5 * SIGMA


def test_per_sample_step_sizes_and_summed_constraint_weights_match_the_scalar_forms():
    obs, _, y = _gauss_case()
    net = GaussEps(0.5, 1.0)
    con = BrightnessConstraint(image=4, total=8.0)
    kw = dict(shape=(1, 4, 4), n=6, sigma_y=SIGMA, steps=20, mirror=False, constraint=con, seed=2)
    ref = mirror_dps(net, None, obs, y, zeta=0.1, constraint_weight=1.2, **kw)  # w·mean over 6 samples
    per = mirror_dps(net, None, obs, y, zeta=torch.full((6,), 0.1), constraint_weight=torch.full((6,), 0.2),
                     constraint_reduction="sum", **kw)  # Σ_i 0.2·ℓ_i = 1.2·mean
    torch.testing.assert_close(per, ref)
    with pytest.raises(ValueError, match="zeta_schedule"):
        mirror_dps(net, None, obs, y, zeta_schedule="nope", **kw)


def test_selection_rule_prefers_the_lowest_constraint_among_noise_level_misfits():
    def e(z, m, c, bad=0):
        return {"zeta": z, "constraint_weight": 0.0, "misfit": m, "constraint_mean": c, "n_nonfinite": bad}

    sweep = [e(0.1, 0.35, 0.001), e(0.3, 0.19, 0.05), e(1.0, 0.12, 0.02), e(3.0, 0.08, 0.3), e(10, 0.05, 0.0, 1)]
    # below σ_y counts as σ_y: 0.3, 1.0 and 3.0 tie; the unstable ζ = 10 is out; ζ = 0.1 misfits too much
    assert db.select_config(sweep, SIGMA)["zeta"] == 1.0
    # nothing reaches σ_y: within 10% of the best misfit (0.30 → up to 0.33) the lowest constraint wins
    sweep = [e(0.1, 0.40, 0.01), e(0.3, 0.32, 0.02), e(1.0, 0.30, 0.05)]
    assert db.select_config(sweep, SIGMA)["zeta"] == 0.3
    # every configuration unstable: the least bad is reported, flagged
    pick = db.select_config([e(1.0, math.inf, math.inf, 3), e(0.3, 0.5, 0.1, 1)], SIGMA)
    assert pick["zeta"] == 0.3 and pick["unstable"]


# ------------------------------------------------------------------------------------------------------------
# the harness, end to end at a seconds-sized scale
# ------------------------------------------------------------------------------------------------------------
TINY_BENCH = replace(
    ncfg.CI, name="tiny", n_train=24, n_test=12, n_samples=4, namm_steps=3, dm_steps=3, sample_steps=4,
    problem_kw={**ncfg.CI.problem_kw, "burgers": dict(nx=8, nt=8)},
    namm_kw={p: {**kw, "steps": 3} for p, kw in ncfg.CI.namm_kw.items()},  # the ci NAMM settings, 3 steps
)
TINY = ncfg.DpsScale(name="tiny", bench=TINY_BENCH, n_val=2, n_val_post=2, n_cases=2, n_post=2, steps=5,
                   zetas=(0.1, 1.0), cg_weights=(1.0, 3.0))


def test_suite_writes_json_figure_and_table(tmp_path, monkeypatch):
    from flows import bench

    report = db.run_dps_suite(TINY, "cpu", seeds=(0, 1), log=lambda s: None)
    # the figure's data (first seed's result per problem, images and constraint), not part of the JSON
    assert [r["problem"] for r in report["_figure"]] == list(db.PROBLEMS)
    assert all(r["seed"] == 0 and {"truth", "observation", *db.SAMPLERS} <= set(r["_examples"])
               for r in report["_figure"])
    # the bench returns the report; flows.bench writes it and its figure under the layout's names
    monkeypatch.setenv("CDCORE_TRACKING", "off")
    monkeypatch.setattr(bench, "run_dps_suite", lambda *a, **k: report)
    assert bench.run_namm_inverse("ci", "cpu", tmp_path, log=lambda s: None) is report
    assert "_figure" not in report
    on_disk = json.loads((tmp_path / "reports" / "bench" / "namm_dps.json").read_text())
    assert (tmp_path / "reports" / "bench" / "namm_dps.png").stat().st_size > 1000
    for rep in (report, on_disk):
        rows = rep["rows"]
        assert [(r["problem"], r["seed"], r["sampler"]) for r in rows] == [
            (p, s, m) for p in db.PROBLEMS for s in (0, 1) for m in db.SAMPLERS]
        for r in rows:
            assert set(db.ROW_KEYS) <= set(r)
            assert r["n_samples"] == 4 and r["steps"] == 5 and r["wall_s"] > 0
            assert r["constraint_mean"] >= 0 and r["constraint_median"] >= 0
            assert (r["constraint_weight"] > 0) == (r["sampler"] == "cg_dps")
            assert r["tuned_on_seed"] == 0  # tune="first": the first seed's choice is reused
        mirror = [r for r in rows if r["sampler"] == "mirror_dps"]
        assert all(math.isfinite(r["misfit"]) and r["n_nonfinite"] == 0 for r in mirror)
        assert set(rep["summary"]) == set(db.PROBLEMS)
        for per in rep["summary"].values():
            assert set(per) == set(db.SAMPLERS)
            for s in per.values():
                assert s["seeds"] == [0, 1] and {"mean", "lo", "hi", "n"} <= set(s["constraint_mean"])
            assert per["mirror_dps"]["misfit"]["n"] == per["dps"]["misfit"]["n"] == 2  # finite on both seeds
        t = rep["targets"]
        assert set(t["problems"]) == set(db.PROBLEMS) and isinstance(t["met"], bool)
        for p in t["problems"].values():
            assert set(p["vs"]) == set(db.BASELINES)
            for v in p["vs"].values():
                assert v["met"] == (v["constraint_met"] and v["misfit_met"])
                assert v["misfit_bound"] == pytest.approx(1.1 * max(v["misfit_baseline"], SIGMA), nan_ok=True)
        assert set(rep["tuning"]) == set(db.PROBLEMS)
        assert len(rep["tuning"]["burgers"]["cg_dps"]["sweep"]) == 4
        assert rep["observation"]["burgers"]["m"] == 8  # first 1 of 8 columns at nx = nt = 8
    table = db.format_dps_report(report)
    assert "mirror_dps" in table and "cg_dps" in table and ("MET" in table)


def test_run_inverse_reuses_fitted_models_and_tuning():
    fitted = nb.run_problem("burgers", TINY_BENCH, torch.device("cpu"), seed=0, log=lambda s: None,
                            return_models=True)
    assert {"vanilla", "mdm", "g", "f"} <= set(fitted["models"])
    tuned = {s: {"zeta": 0.1, "constraint_weight": 1.0 if s == "cg_dps" else 0.0, "tuned_on_seed": 7}
             for s in db.SAMPLERS}
    res = db.run_inverse("burgers", TINY, "cpu", 0, log=lambda s: None, fitted=fitted, tuned=tuned)
    assert [r["sampler"] for r in res["rows"]] == list(db.SAMPLERS)
    assert all(r["zeta"] == 0.1 and r["tuned_on_seed"] == 7 for r in res["rows"])
    ex = res["_examples"]
    assert ex["truth"].shape == ex["mirror_dps"].shape == (1, 8, 8)
    assert np.isnan(ex["observation"][..., 1:]).all() and np.isfinite(ex["observation"][..., :1]).all()
    with pytest.raises(KeyError):
        db.run_inverse("count", TINY, "cpu", 0, fitted=fitted)
