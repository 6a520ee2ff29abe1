"""`cdcore bench dual`: the digits fairness harness at a tiny scale, its JSON rows, summary, targets and CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from cdcore.benchmarks.dual import ROW_KEYS, evaluate_targets, format_dual_report, run_dual_bench
from cdcore.metrics import t_interval
from cdcore.config.dual import SCALES
from flows import bench
from flows.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def no_tracking(monkeypatch):
    monkeypatch.setenv("CDCORE_TRACKING", "off")


def _check_report(report: dict, variants: tuple, seeds: tuple) -> None:
    rows = report["rows"]
    assert [(r["model"], r["seed"]) for r in rows] == [(v, s) for s in seeds for v in variants]
    minority = report["minority"]
    assert minority == [4, 5, 7]
    for r in rows:
        assert set(ROW_KEYS) <= set(r), set(ROW_KEYS) - set(r)
        assert r["benchmark"] == "digits_fair" and r["device"] == "cpu" and r["rho"] == 0.1
        assert set(r["minority_share_corrected"]) == {"4", "5", "7"}
        for key in ("minority_share_corrected", "minority_share_raw"):
            shares = list(r[key].values())
            if key == "minority_share_raw" and r["low_conf_rate"] == 1.0:   # nothing recognised: no raw histogram
                assert all(math.isnan(s) for s in shares)
                continue
            assert all(0.0 <= s <= 1.0 for s in shares)
            assert sum(shares) <= 1.0 + 1e-9
        assert sum(r["hist_corrected"]) == pytest.approx(1.0)
        assert len(r["predicted_shares"]) == 10 and sum(r["predicted_shares"]) <= 1.0 + 1e-9
        assert len(r["lambda_final"]) == len(minority)
        assert r["fd"] >= 0 and r["fd_floor"] >= 0 and 0 <= r["low_conf_rate"] <= 1
        assert r["wall_s"] > 0 and math.isfinite(r["peak_mem_mb"])
    unc = [r for r in rows if r["model"] == "unconstrained"]
    assert all(lam == 0 for r in unc for lam in r["lambda_final"])
    for name in variants:
        s = report["summary"][name]
        assert s["seeds"] == list(seeds)
        iv = s["share_corrected_4"]
        assert iv["lo"] <= iv["mean"] <= iv["hi"] and iv["n"] == len(seeds)


def test_dual_bench_tiny_writes_rows_summary_targets_and_plot(tmp_path, monkeypatch):
    report = run_dual_bench("tiny", "cpu", seeds=(0, 1), log=lambda s: None, threads=1)
    variants = SCALES["tiny"].variants
    _check_report(report, variants, (0, 1))
    # the bench returns the report; flows.bench writes it and its figure under the layout's names
    monkeypatch.setattr(bench, "run_dual_bench", lambda *a, **k: report)
    assert bench.run_dual("tiny", "cpu", tmp_path) is report
    on_disk = json.loads((tmp_path / "reports" / "bench" / "dual.json").read_text())
    _check_report(on_disk, variants, (0, 1))
    assert "Student-t" in on_disk["interval"]
    t = on_disk["targets"]
    assert set(t) == {"dual_minority_share", "dual_fd_below_unconstrained"}
    assert isinstance(t["dual_minority_share"]["met"], bool)
    assert set(t["dual_minority_share"]["per_class"]) == {"4", "5", "7"}
    assert t["dual_fd_below_unconstrained"]["paired_difference_dual_minus_unconstrained"]["n"] == 2
    assert (tmp_path / "reports" / "bench" / "dual_shares.png").stat().st_size > 1000
    table = format_dual_report(on_disk)
    assert table.startswith("| model |") and "| dual | 2 |" in table and "target" in table


def test_t_interval_and_targets_on_known_numbers():
    iv = t_interval([1.0, 2.0, 3.0])
    assert iv["mean"] == 2.0 and iv["hi"] - 2.0 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert t_interval([5.0]) == {"mean": 5.0, "lo": 5.0, "hi": 5.0, "n": 1}

    def row(model, seed, shares, fd):
        return {"model": model, "seed": seed, "fd": fd,
                "minority_share_corrected": {str(c): s for c, s in zip((4, 5, 7), shares)}}

    rows = [row("unconstrained", s, (0.02, 0.02, 0.02), 30.0 + s) for s in range(3)]
    rows += [row("dual", s, (0.10 + 0.01 * s, 0.09, 0.11), 20.0 + s) for s in range(3)]
    summary = {}
    for name in ("unconstrained", "dual"):
        rs = [r for r in rows if r["model"] == name]
        summary[name] = {f"share_corrected_{c}": t_interval([r["minority_share_corrected"][str(c)] for r in rs])
                         for c in (4, 5, 7)}
        summary[name]["fd"] = t_interval([r["fd"] for r in rs])
    t = evaluate_targets(rows, summary, (4, 5, 7))
    assert t["dual_minority_share"]["met"] and t["dual_fd_below_unconstrained"]["met"]
    assert t["dual_fd_below_unconstrained"]["paired_difference_dual_minus_unconstrained"]["mean"] == -10.0
    rows[3]["minority_share_corrected"]["4"] = 0.2
    summary["dual"]["share_corrected_4"] = t_interval([0.2, 0.11, 0.12])
    assert not evaluate_targets(rows, summary, (4, 5, 7))["dual_minority_share"]["met"]


def test_cli_bench_dual_tiny_exits_zero_and_writes_json(tmp_path):
    res = runner.invoke(app, ["bench", "dual", "--scale", "tiny", "--device", "cpu", "--only", "unconstrained",
                              "--root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "| unconstrained | 1 |" in res.output
    rows = json.loads((tmp_path / "reports" / "bench" / "dual.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["unconstrained"]
    assert not (tmp_path / "reports" / "bench" / "landing.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["bench", "nosuch"], "unknown benchmark suite 'nosuch'; available: landing, dual"),
    (["bench", "dual", "--scale", "huge"], "--scale must be one of tiny, ci, paper"),
    (["bench", "dual", "--only", "nosuch"], "unknown dual variant 'nosuch'; available: unconstrained, dual"),
    (["bench", "landing", "--scale", "tiny"], "--scale must be one of ci, paper for landing"),
])
def test_cli_bench_refuses_unknown_suite_scale_or_variant(argv, message, tmp_path):
    res = runner.invoke(app, argv + ["--root", str(tmp_path)])
    assert res.exit_code == 2
    assert message in res.output
    assert not (tmp_path / "reports").exists()


def test_variant_configs():
    from cdcore.config.dual import VARIANTS, variant_cfg
    from cdcore.methods.dual import oracle_lambdas

    pi = np.array([0.12] * 7 + [0.02] * 3)
    pi = pi / pi.sum()
    cfgs = {v: variant_cfg(v, SCALES["tiny"], oracle_lambdas(pi, [7, 8, 9]) if v == "reweight" else None)
            for v in VARIANTS}
    assert cfgs["conditional"].model.num_classes == 10 and cfgs["conditional"].dual.mode == "unconstrained"
    assert cfgs["unconstrained"].model.num_classes == 0 and cfgs["unconstrained"].dual.mode == "unconstrained"
    assert cfgs["dual"].dual.mode == "dual" and cfgs["dual"].dual.resilience == SCALES["tiny"].resilience
    assert cfgs["dual-rel"].dual.threshold_kind == "relative"
    assert cfgs["reweight"].dual.mode == "fixed" and all(lam > 0 for lam in cfgs["reweight"].dual.fixed_lambdas)
    with pytest.raises(KeyError, match="available"):
        variant_cfg("nosuch", SCALES["tiny"])
    with pytest.raises(ValueError, match="only for, the reweight"):
        variant_cfg("reweight", SCALES["tiny"])
