"""Fine-tuning benchmark (issue #5): pretrain without 9, fine-tune on 9s, constrained vs unconstrained."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from cdcore.data.digits import DigitsCfg, load_digits_split
from cdcore.config.dual import SCALES
from cdcore.methods.dual.evaluate import fit_classifier
from cdcore.methods.dual.finetune import evaluate_finetune_samples, finetune_variants, pretrain_teacher
from cdcore.benchmarks.dual_finetune import evaluate_finetune_targets, format_finetune_report, run_finetune_bench
from flows import bench

# small enough for seconds, trained enough that the teacher knows 0-8 and fine-tuning on 9s is not drift
SMALL = replace(SCALES["tiny"], steps=400, hidden=64, lr=2e-3, n_samples=300)


@pytest.fixture(scope="module")
def split():
    return load_digits_split(DigitsCfg(seed=0))


def test_small_bench_constrained_holds_the_teacher_and_writes_the_report(tmp_path, monkeypatch):
    report = run_finetune_bench(SMALL, "cpu", seeds=(0,), log=lambda s: None)
    # the bench returns the report; flows.bench writes it and its figure under the layout's names
    monkeypatch.setenv("CDCORE_TRACKING", "off")
    monkeypatch.setattr(bench, "run_finetune_bench", lambda *a, **k: report)
    assert bench.run_dual_finetune("tiny", "cpu", tmp_path) is report
    on_disk = json.loads((tmp_path / "reports" / "bench" / "dual_finetune.json").read_text())
    for rep in (report, on_disk):
        assert {"benchmark", "scale", "settings", "interval", "rows", "summary", "targets", "total_s"} <= set(rep)
        assert [(r["variant"], r["seed"]) for r in rep["rows"]] == [
            ("teacher", 0), ("unconstrained", 0), ("constrained", 0)]
        assert set(rep["targets"]) == {"constrained_keeps_old_classes", "constrained_fd_below_unconstrained"}
        for t in rep["targets"].values():
            assert isinstance(t["met"], bool) and isinstance(t["met_by_whole_interval"], bool)
            assert t["paired_difference_constrained_minus_unconstrained"]["n"] == 1
            assert not t["met_by_whole_interval"]                         # one seed: no interval, never "met by" it
    rows = {r["variant"]: r for r in on_disk["rows"]}
    teacher, unc, con = rows["teacher"], rows["unconstrained"], rows["constrained"]
    for r in rows.values():
        assert r["share_old"] + r["share_new"] == pytest.approx(1.0)
        assert sum(r["hist_corrected"]) == pytest.approx(1.0)
        assert r["fd"] >= 0 and r["fd_floor"] > 0 and math.isfinite(r["kl_uniform"])
    b = con["threshold"]
    assert b > 0 and b == con["drift_threshold"] == unc["drift_threshold"]
    # the unconstrained run never moves λ; the constrained one does, and its λ-mixture predicts the 9s it makes
    assert unc["lambda_final"] == 0 and all(v == 0 for v in unc["lambda_history"])
    assert con["lambda_tail_mean"] > 0.1
    assert con["predicted_share_new"] == pytest.approx(1 / (1 + con["lambda_tail_mean"]))
    # the distillation constraint holds (to the dual loop's tolerance) and unconstrained fine-tuning breaks it
    assert con["distill_loss_train_tail"] < 1.25 * b
    assert con["distill_loss"] < 0.6 * unc["distill_loss"]
    assert unc["distill_loss_train_tail"] > 2 * b
    # what the constraint is for: more of 0-8 is kept, and the teacher (no 9s in its data) makes few 9s
    assert con["share_old"] > unc["share_old"] + 0.1
    assert teacher["share_new"] < 0.15 and teacher["distill_loss"] == 0.0
    assert (tmp_path / "reports" / "bench" / "dual_finetune.png").stat().st_size > 1000
    table = format_finetune_report(on_disk)
    assert table.startswith("| variant |") and "| constrained | 1 |" in table and "target FD" in table


def test_variants_share_their_draws_and_differ_only_through_lambda(split):
    sc = SCALES["tiny"]
    teacher = pretrain_teacher(split, "tiny", seed=0)
    x9 = split.x_train[split.y_train == 9]
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    # a threshold nothing reaches: λ stays 0, so constrained fine-tuning is unconstrained fine-tuning, bit for bit
    outs = finetune_variants(teacher, x9, sc, seed=3, device="cpu", threshold=1e3)
    assert set(outs) == {"constrained", "unconstrained"}
    assert np.all(outs["constrained"].lambdas == 0)
    sa, sb = outs["constrained"].model.state_dict(), outs["unconstrained"].model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # a tiny threshold: λ rises, the constrained model leaves the unconstrained path; the teacher stays frozen
    rows = []
    outs = finetune_variants(teacher, x9, sc, seed=3, device="cpu", threshold=1e-6,
                             on_progress=lambda step, row: rows.append(row["variant"]))
    assert outs["constrained"].lambdas[-1, 0] > 0 and outs["constrained"].thresholds[0, 0] == 1e-6
    assert {"constrained", "unconstrained"} <= set(rows)
    sa, sb = outs["constrained"].model.state_dict(), outs["unconstrained"].model.state_dict()
    assert not all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    with pytest.raises(ValueError, match="excluding"):
        pretrain_teacher(split, "tiny", exclude=tuple(range(10)))


def test_evaluate_finetune_on_real_digits(split):
    clf = fit_classifier(split.x_train, split.y_train, split.x_test, split.y_test, seed=100, epochs=10)
    real = evaluate_finetune_samples(split.x_train, clf, split, seed=0, n_boot=50, fd_repeats=3)
    assert real["share_new"] == pytest.approx(0.1, abs=0.03) and real["share_old"] == pytest.approx(0.9, abs=0.03)
    assert real["kl_uniform"] < 0.03 and real["tv_uniform"] < 0.08
    assert real["fd"] < 1.5 * real["fd_floor"] + 1.0                     # real balanced digits sit at the floor
    lo, hi = real["share_old_ci"]
    assert lo <= real["share_old"] <= hi
    nines = evaluate_finetune_samples(split.x_train[split.y_train == 9], clf, split, seed=0, n_boot=50, fd_repeats=3)
    assert nines["share_new"] > 0.9 and nines["kl_uniform"] > 1.5
    assert nines["fd"] > 10 * real["fd"]                               # all-9s is far from the balanced test split


def test_targets_are_paired_over_seeds():
    def row(variant, seed, old, fd):
        return {"variant": variant, "seed": seed, "share_old": old, "fd": fd}

    rows = [row("unconstrained", s, 0.01 * s, 300.0 + 10 * s) for s in range(3)]
    rows += [row("constrained", s, 0.6 + 0.01 * s, 100.0 + 10 * s) for s in range(3)]
    summary = {"constrained": {"share_old": {"mean": 0.61}, "fd": {"mean": 110.0}, "fd_floor": {"mean": 8.0}},
               "unconstrained": {"share_old": {"mean": 0.01}, "fd": {"mean": 310.0}}}
    t = evaluate_finetune_targets(rows, summary)
    d = t["constrained_fd_below_unconstrained"]
    assert d["per_seed"] == [-200.0] * 3 and d["met"] and d["met_by_whole_interval"]
    k = t["constrained_keeps_old_classes"]
    assert k["paired_difference_constrained_minus_unconstrained"]["mean"] == pytest.approx(0.6)
    assert k["met"] and k["met_by_whole_interval"]
    # a constrained model worse on one seed: the mean may pass, the interval must not
    rows[-1]["fd"] = 600.0
    d = evaluate_finetune_targets(rows, summary)["constrained_fd_below_unconstrained"]
    assert not d["met_by_whole_interval"]
    assert evaluate_finetune_targets(rows[:3], {"unconstrained": {}}) == {}
