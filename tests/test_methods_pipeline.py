"""NAMM and dual training as pipeline methods: the same stages, files, reports and registry as landing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from cdcore.config import ConfigError, parse_params
from tests.conftest import REPO

NAMM_DS = {"kind": "namm", "method": "namm", "problem": "burgers", "n_train": 32, "n_test": 16, "namm_steps": 15,
           "train_steps": 15, "sample_steps": 8, "n_samples": 8}
DIGITS_DS = {"kind": "digits", "method": "dual", "train_steps": 40}
TINY_DUAL = {"hidden": 32, "depth": 1, "T": 100, "n_samples": 200, "classifier_epochs": 3, "primal_per_dual": 2,
             "dual_lr": 2.0}


def _params(datasets: dict, **extra):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["datasets"] = datasets
    raw["finetune"] = {}
    raw["dual"] = {**raw["dual"], **TINY_DUAL}
    raw["tracking"] = {**raw["tracking"], "experiment": "tiny-methods", "model_name": "tiny-{method}"}
    raw.update(extra)
    return parse_params(raw)


def test_namm_method_runs_data_mirror_train_sample_evaluate(tmp_path):
    from flows import stages
    from cdcore.methods.namm.io import load_sampler

    p = _params({"burgers": NAMM_DS, "vmf": {"kind": "vmf", "n": 100}})
    assert p.method_for("burgers") == "namm" and p.method_for("vmf") == "landing"
    data = stages.run_data(p, "burgers", tmp_path)
    from cdcore.data import io

    splits, attrs = io.read_dataset(data)
    assert attrs["method"] == "namm" and attrs["shape"] == [16, 16, 1]
    assert [len(splits[k]) for k in ("train", "val", "test")] == [32, 8, 16]
    # the data satisfy the problem's own constraint (rebuilt from the file's attributes)
    from cdcore.constraints import make

    c = make(attrs["constraint"], **attrs["constraint_kwargs"])
    assert float(c.distance(torch.as_tensor(splits["train"])).max()) <= attrs["generator_tol"]

    # the mirror stage sits between data and training; for another method it only records that it needs none
    m = stages.run_mirror(p, "burgers", tmp_path)
    assert m.name == "namm.pt"
    stages.run_data(p, "vmf", tmp_path)
    none = stages.run_mirror(p, "vmf", tmp_path)
    assert json.loads(none.read_text())["mirror"] is None

    model = stages.run_train(p, "burgers", tmp_path)
    bundle = load_sampler(model)
    assert bundle["meta"]["method"] == "namm"
    stages.run_sample(p, "burgers", tmp_path)
    rows = stages.run_evaluate(p, "burgers", tmp_path)
    (r,) = rows
    assert r["method"] == "namm" and r["n_samples"] == 8 and np.isfinite(r["constraint_mean"])
    assert r["data_constraint_mean"] < 1e-5 < r["constraint_mean"]       # a 15-step model is not feasible yet
    assert (tmp_path / "reports" / "datasets" / "burgers_map.png").stat().st_size > 10_000
    # a second run of every stage is skipped on its fingerprint
    before = model.stat().st_mtime_ns
    stages.run_train(p, "burgers", tmp_path)
    assert model.stat().st_mtime_ns == before
    assert "constraint distance mean" in stages.format_table(rows)


def test_namm_pipeline_builds_and_reloads_the_benchmarks_periodic_nets(tmp_path):
    """The periodic textures' circular f and score U-Net (ci scale) reach the pipeline's bundle and come back from
    it: a reloaded sampler with zero-padded nets would load the same weights into different functions."""
    from cdcore.config.namm import CI
    from flows import stages
    from cdcore.methods.namm.io import draw, load_sampler

    ds = {**NAMM_DS, "problem": "periodic_texture", "n_train": 16, "n_test": 8, "namm_steps": 3, "train_steps": 3,
          "sample_steps": 4, "n_samples": 4}
    p = _params({"tex": ds})
    for stage in (stages.run_data, stages.run_mirror):
        stage(p, "tex", tmp_path)
    bundle = load_sampler(stages.run_train(p, "tex", tmp_path))
    assert bundle["meta"]["padding"] == CI.dm_kw["periodic_texture"]["padding"] == "circular"
    convs = [m for net in (bundle["f"], bundle["score"]) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.padding_mode == "circular" for m in convs if m.kernel_size[0] > 1)
    x = draw(bundle, 4, seed=0)
    assert x.shape == (4, 1, 16, 16) and torch.isfinite(x).all()


def test_namm_pipeline_fine_tunes_f_as_the_bench_does(tmp_path):
    """finetune_steps in params.yaml runs the bench's fine-tuning: the scale's settings (ci periodic_texture:
    λ_cyc 3; with the fit's λ_cyc 1 f collapses), the data set's finetune_kw over them, held-out diagnostics in the
    bundle; changing the settings re-runs the stage, and an unknown setting is refused with the list."""
    from cdcore.config.namm import CI
    from cdcore.config.namm import finetune_cfg, namm_cfg
    from flows import stages
    from flows.stages import namm as stages_namm
    from cdcore.methods.namm.io import load_sampler

    ds = {**NAMM_DS, "problem": "periodic_texture", "n_train": 16, "n_test": 8, "namm_steps": 3, "train_steps": 3,
          "sample_steps": 4, "n_samples": 4, "finetune_steps": 2}
    p = _params({"tex": ds})
    for stage in (stages.run_data, stages.run_mirror):
        stage(p, "tex", tmp_path)
    ft = load_sampler(stages.run_train(p, "tex", tmp_path))["meta"]["finetune"]
    assert ft["steps"] == 2 and ft["lam_cyc"] == CI.finetune_kw["periodic_texture"]["lam_cyc"] == 3.0
    assert np.isfinite([ft["val_constr_before"], ft["val_constr_after"], ft["val_mmd_after"]]).all()
    p2 = _params({"tex": {**ds, "finetune_kw": {"lam_cyc": 5.0}}})
    assert finetune_cfg(p2.dataset("tex"), namm_cfg(p2.dataset("tex"))).lam_cyc == 5.0
    assert stages_namm.fp_train(p2, "tex", tmp_path) != stages_namm.fp_train(p, "tex", tmp_path)
    with pytest.raises(ConfigError, match=r"finetune_kw.*lam_cycle.*lam_cyc"):
        _params({"tex": {**ds, "finetune_kw": {"lam_cycle": 5.0}}})


def test_dual_method_trains_with_constraints_and_reports_class_shares(tmp_path):
    from cdcore.data import io
    from cdcore.methods.dual import load_dual
    from flows import stages

    p = _params({"digits": DIGITS_DS, "no9": {"kind": "digits", "minority": [], "exclude": [9], "train_steps": 10}})
    path = stages.run_data(p, "digits", tmp_path)
    splits, attrs = io.read_dataset(path)
    labels = io.read_labels(path)
    counts = np.bincount(labels["train"], minlength=10)
    big = counts.max()
    assert all(counts[c] == max(1, round(0.1 * big)) for c in (4, 5, 7))         # the minorities kept at ρ
    assert np.all(np.bincount(labels["test"], minlength=10) == np.bincount(labels["test"], minlength=10)[0])

    model = stages.run_train(p, "digits", tmp_path)
    net, cfg, meta = load_dual(model)
    assert meta["mode"] == "dual" and len(meta["lambda_final"]) == 3
    assert max(meta["lambda_final"]) > 0                                           # the dual ascent moved λ
    hist = json.loads((model.parent / "history.json").read_text())
    assert len(hist["lambdas"]) == len(hist["predicted_shares"]) > 1
    stages.run_sample(p, "digits", tmp_path)
    (r,) = stages.run_evaluate(p, "digits", tmp_path)
    assert r["method"] == "dual" and r["metric"] == "frechet_clf" and r["score"] > r["score_floor"] > 0
    assert {"share/4", "share/5", "share/7"} <= set(r) and isinstance(r["share_within_tol"], bool)

    # a pretrained model that never sees 9: no constraint, no 9 in its data, 9s in the balanced test split
    stages.run_data(p, "no9", tmp_path)
    lab = io.read_labels(tmp_path / "data" / "no9.h5")
    assert 9 not in lab["train"] and (lab["test"] == 9).sum() > 0
    _, _, meta9 = load_dual(stages.run_train(p, "no9", tmp_path))
    assert meta9["mode"] == "unconstrained" and meta9["lambda_final"] == []


@pytest.mark.slow
def test_namm_and_dual_samplers_register_and_load_by_alias(tmp_path):
    import mlflow
    import pandas as pd

    from flows import stages

    p = _params({"burgers": NAMM_DS, "digits": {**DIGITS_DS, "train_steps": 10}})
    for name in ("burgers", "digits"):
        for stage in (stages.run_data, stages.run_mirror, stages.run_train, stages.run_sample, stages.run_evaluate,
                      stages.run_register):
            stage(p, name, tmp_path)
    reg = {n: json.loads((tmp_path / "registry" / f"{n}.json").read_text()) for n in ("burgers", "digits")}
    assert reg["burgers"]["uri"] == "models:/tiny-namm-burgers@candidate"
    assert reg["digits"]["uri"] == "models:/tiny-dual-digits@candidate"
    namm = mlflow.pyfunc.load_model(reg["burgers"]["uri"])
    x = namm.predict(pd.DataFrame({"n": [5], "seed": [1]}))
    assert x.shape == (5, 1, 16, 16) and np.isfinite(x).all()
    assert set(namm.unwrap_python_model().last_report) == {"constraint_mean", "constraint_max"}
    dual = mlflow.pyfunc.load_model(reg["digits"]["uri"])
    y = dual.predict(pd.DataFrame({"n": [7], "seed": [2]}))
    assert y.shape == (7, 64) and np.all(np.abs(y) <= 1.0 + 1e-5)
    assert np.array_equal(y, dual.predict(pd.DataFrame({"n": [7], "seed": [2]})))   # a seed gives the same digits


def test_method_must_fit_the_kind_of_data():
    with pytest.raises(ConfigError, match=r"datasets.burgers.method.*kind namm.*trained by method namm"):
        _params({"burgers": {**NAMM_DS, "method": "landing"}})
    with pytest.raises(ConfigError, match=r"method: data set 'vmf' \(kind vmf\) is trained by method landing"):
        _params({"vmf": {"kind": "vmf"}}, method="dual")
    with pytest.raises(ConfigError, match=r"dual.T = 50 .* set dual.T >= 89"):
        _params({"digits": DIGITS_DS}, dual={"T": 50})
    with pytest.raises(ConfigError, match=r"both minority and excluded"):
        _params({"d": {"kind": "digits", "minority": [9], "exclude": [9]}})
    with pytest.raises(ConfigError, match=r"finetune.ft.new_class: 9 is not excluded"):
        _params({"d": {"kind": "digits"}}, finetune={"ft": {"source": "models/d", "base": "d"}})
    with pytest.raises(ConfigError, match=r"finetune.ft.base: 'x' is not a digits data set"):
        _params({"d": {"kind": "digits"}}, finetune={"ft": {"source": "models/d", "base": "x"}})


def test_finetune_flow_starts_from_a_registered_model_and_keeps_old_digits(tmp_path):
    """Pretrain without 9 through the pipeline, register it, fine-tune from models:/...@candidate both ways."""
    from flows import stages
    from flows.pipeline import finetune_flow

    datasets = {"no9": {"kind": "digits", "method": "dual", "minority": [], "exclude": [9], "train_steps": 400}}
    ft = {"ft9": {"source": "models:/tiny-dual-no9@candidate", "base": "no9", "steps": 60, "teacher_samples": 200}}
    p = _params(datasets, finetune=ft, dual={**TINY_DUAL, "hidden": 64, "lr": 2e-3, "n_samples": 300})
    for stage in (stages.run_data, stages.run_train, stages.run_sample, stages.run_evaluate, stages.run_register):
        stage(p, "no9", tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p.model_dump(mode="json")))
    rep = finetune_flow(params_path="params.yaml", root=str(tmp_path))["ft9"]
    by = {r["variant"]: r for r in rep["rows"]}
    assert set(by) == {"teacher", "unconstrained", "constrained"}
    assert by["constrained"]["lambda_final"] > 0 and by["unconstrained"]["lambda_final"] == 0
    assert by["constrained"]["threshold"] > 0
    assert rep["checks"]["constrained_keeps_more_old_digits"]          # the constraint is what keeps 0-8
    assert by["unconstrained"]["share_new"] > by["teacher"]["share_new"]  # and the plain fine-tune learned 9s
    assert rep["uri"] == "models:/tiny-dual-ft9@candidate"
    assert (tmp_path / "reports" / "finetune" / "ft9.png").stat().st_size > 10_000
    again = finetune_flow(params_path="params.yaml", root=str(tmp_path))["ft9"]      # fingerprinted: not redone
    assert again["fingerprint"] == rep["fingerprint"] and again["rows"] == rep["rows"]


def test_finetune_sources_that_cannot_serve_are_refused_with_the_fix(tmp_path, monkeypatch):
    from cdcore.data import io
    from flows import stages
    from flows.stages.finetune import load_pretrained, run_finetune

    # a registry source while tracking is off: the message says to use a local folder
    monkeypatch.setenv("CDCORE_TRACKING", "off")
    with pytest.raises(ConfigError, match=r"needs the MLflow registry, but tracking is off.*models/<data set>"):
        load_pretrained("models:/x@candidate", tmp_path)
    monkeypatch.delenv("CDCORE_TRACKING")
    # a landing model as the pretrained one: refused, not mis-loaded
    p = _params({"vmf": {"kind": "vmf", "n": 60, "train_steps": 2}}, model={"hidden": 8, "depth": 1, "time_features": 0},
                schedule={"N": 3})
    stages.run_data(p, "vmf", tmp_path)
    stages.run_train(p, "vmf", tmp_path)
    with pytest.raises(ValueError, match=r"not a dual-training checkpoint"):
        load_pretrained("models/vmf", tmp_path)
    # a digits file whose labels were lost: the file and the fix are named
    q = _params({"no9": {"kind": "digits", "minority": [], "exclude": [9], "train_steps": 5}},
                finetune={"ft": {"source": "models/no9", "base": "no9", "steps": 2, "teacher_samples": 10}})
    path = stages.run_data(q, "no9", tmp_path)
    stages.run_train(q, "no9", tmp_path)
    import h5py

    with h5py.File(path, "a") as f:
        del f["labels"]
    with pytest.raises(io.DataError, match=r"no9.h5: no /labels group.*re-run `cdcore data`"):
        run_finetune(q, "ft", tmp_path)
