"""Models registered before the redesign of issue 23 still load and sample: their logged code (the sampler files
of 1dd6972, kept in tests/fixtures/legacy_samplers) imports the old paths, which must keep serving them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO
from tests.test_methods_pipeline import DIGITS_DS, NAMM_DS, _params

LEGACY = REPO / "tests" / "fixtures" / "legacy_samplers"
TINY_VMF = {"kind": "vmf", "n": 300, "components": 2, "kappa": 30.0, "train_steps": 20}


@pytest.mark.parametrize("method,name,ds", [("landing", "vmf", TINY_VMF), ("namm", "burgers", NAMM_DS),
                                             ("dual", "digits", {**DIGITS_DS, "train_steps": 10})])
def test_a_model_logged_with_the_old_sampler_code_loads_and_samples_as_the_new_one(tmp_path, method, name, ds):
    import mlflow

    from flows import stages, tracking

    p = _params({name: ds}, schedule={**_params({name: ds}).schedule.model_dump(), "N": 10},
                model={"hidden": 32, "depth": 2, "time_features": 4},
                train={**_params({name: ds}).train.model_dump(), "batch_size": 64, "val_paths": 16})
    for stage in (stages.run_data, stages.run_mirror, stages.run_train):
        stage(p, name, tmp_path)
    weights = stages.Layout(tmp_path).model(name)
    spec = pd.DataFrame({"n": [6], "seed": [3]})
    out = {}
    for kind, code in (("old", LEGACY / f"{method}.py"), ("new", tracking.sampler_code(method))):
        mlflow.pyfunc.save_model(path=tmp_path / kind, python_model=str(code), artifacts={"weights": str(weights)})
        out[kind] = mlflow.pyfunc.load_model(str(tmp_path / kind)).predict(spec)
    assert out["old"].shape[0] == 6 and np.isfinite(out["old"]).all()
    assert np.array_equal(out["old"], out["new"])
