"""`cdcore bench cost`: every sampler's cost row at one batch, N, network and precision, and the ratios."""

import json

import pytest
import torch
from typer.testing import CliRunner

from cdcore import benchmarks
from cdcore.benchmarks.cost import OFFICIAL_H100, cost_ratios, run_cost
from cdcore.config import ModelCfg
from flows.cli import app
# Imported here, not first inside CliRunner.invoke: importing prefect binds its console log handler to the
# current stderr, and CliRunner's is closed after the call, which broke every later flow's logging.
import flows.bench  # noqa: E402,F401  (imports prefect)

TINY_NET = ModelCfg(hidden=16, depth=1, time_features=2)
SAMPLERS = ["OLLA", "OLLA-P", "unconstrained overdamped", "floor overdamped",
            "ULLA", "ULLA-P", "unconstrained underdamped", "floor underdamped"]


def test_cost_rows_cover_every_sampler_at_the_benchmarks_n_and_ratios_come_from_them():
    b = benchmarks.get("earth")
    res = run_cost(b, torch.device("cpu"), n=64, runs=2, model_cfg=TINY_NET, log=lambda s: None)
    rows = {r["sampler"]: r for r in res["rows"]}
    assert list(rows) == SAMPLERS
    assert {rows[s]["N"] for s in SAMPLERS[:4]} == {b.od_schedule.N}
    assert {rows[s]["N"] for s in SAMPLERS[4:]} == {b.ud_schedule.N}
    for s in ("OLLA", "ULLA"):  # landing on the released step sizes: on the set, nothing dropped
        assert rows[s]["drop_rate"] == 0.0 and rows[s]["violation_max"] <= 1e-5
        assert len(rows[s]["walls"]) == 2 and rows[s]["wall_s"] > 0
    q = res["ratios"]
    assert q["landing_over_unconstrained_od"] == rows["OLLA"]["wall_s"] / rows["unconstrained overdamped"]["wall_s"]
    assert q["projection_over_landing_ud"] == rows["ULLA-P"]["wall_s"] / rows["ULLA"]["wall_s"]
    assert q["landing_over_floor_od"] == rows["OLLA"]["wall_s"] / rows["floor overdamped"]["wall_s"]
    assert "official_landing_over_ours_od" not in q  # the official figures are an H100's at the paper batch


def test_official_figures_enter_only_at_their_protocol():
    rows = [{"sampler": s, "wall_s": w} for s, w in zip(SAMPLERS, [0.1, 0.3, 0.09, 0.08, 0.05, 0.2, 0.045, 0.04])]
    on_gpu = cost_ratios(rows, "so10", torch.device("cuda"), OFFICIAL_H100["so10"]["n"], "bf16")
    assert on_gpu["official_landing_over_ours_od"] == pytest.approx(1.114 / 0.1)
    assert on_gpu["official_landing_over_ours_ud"] == pytest.approx(0.573 / 0.05)
    assert on_gpu["official_floor_s"] == 0.038 and on_gpu["olla_meets_target_s"] is True
    assert on_gpu["landing_within_1.15_of_unconstrained"] is True  # 0.1 / 0.09 and 0.05 / 0.045
    assert "official_landing_over_ours_od" not in cost_ratios(rows, "so10", torch.device("cuda"), 500, "fp32")
    assert "official_landing_over_ours_od" not in cost_ratios(rows, "torus", torch.device("cuda"), 10_000, "fp32")


def test_cli_bench_cost_writes_json_and_plot_and_refuses_tf32_on_cpu(tmp_path, monkeypatch):
    import cdcore.benchmarks.cost as bc

    monkeypatch.setenv("CDCORE_TRACKING", "off")

    monkeypatch.setattr(bc, "cpu_batch", lambda bench: 32)
    orig = bc.run_cost
    monkeypatch.setattr(bc, "run_cost", lambda *a, **k: orig(*a, **{**k, "model_cfg": TINY_NET, "runs": 1}))
    runner = CliRunner()
    res = runner.invoke(app, ["bench", "cost", "--device", "cpu", "--only", "earth", "--root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "reports" / "bench" / "cost.json").read_text())
    assert [r["sampler"] for r in report["rows"]] == SAMPLERS and report["precision"] == "fp32"
    assert (tmp_path / "reports" / "bench" / "cost.png").stat().st_size > 10_000
    assert "| earth | 32 |" in res.output
    bad = runner.invoke(app, ["bench", "cost", "--device", "cpu", "--precision", "tf32", "--root", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "tf32 is a CUDA tensor-core mode; on cpu use fp32 or bf16" in bad.output
