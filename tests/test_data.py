"""Data stage: earth catalogues, synthetic vMF, HDF5 schema, and refusal of bad files."""

import h5py
import numpy as np
import pytest

from cdcore.config import load_params
from cdcore.data import io
from cdcore.data.earth import latlon_to_xyz, read_latlon_csv, xyz_to_latlon
from cdcore.data.synthetic import vmf_mixture
from flows import stages
from tests.conftest import REPO, SHARED


def test_vendored_catalogues_match_shared_copies():
    src = SHARED / "data" / "earth"
    if not src.is_dir():
        pytest.skip(f"{src} not present: nothing to compare the vendored copies with")
    for name in ("volcano", "earthquake", "flood", "hurricane"):
        assert io.sha256_file(REPO / "assets" / "earth" / f"{name}.csv") == io.sha256_file(src / f"{name}.csv")


@pytest.mark.parametrize("name,n", [("volcano", 827), ("earthquake", 6120), ("flood", 4875), ("hurricane", 5336)])
def test_earth_catalogues_parse_to_unit_vectors(name, n):
    ll = read_latlon_csv(REPO / "assets" / "earth" / f"{name}.csv")
    assert ll.shape == (n, 2)
    x = latlon_to_xyz(ll)
    assert np.abs(np.linalg.norm(x, axis=1) - 1).max() < 1e-12
    back = xyz_to_latlon(x)
    assert np.allclose(back[:, 0], ll[:, 0], atol=1e-9)


def test_vmf_mixture_concentrates_at_the_rate_of_kappa():
    """E[mu·x] = coth(kappa) - 1/kappa for a vMF on S^2: the sampler must match it."""
    kappa = 10.0
    x, means = vmf_mixture(20000, 1, kappa, seed=1)
    assert np.abs(np.linalg.norm(x, axis=1) - 1).max() < 1e-12
    expected = 1 / np.tanh(kappa) - 1 / kappa
    assert abs((x @ means[0]).mean() - expected) < 0.005


def test_data_stage_writes_documented_schema(project):
    params = load_params(project / "params.yaml")
    out = stages.run_data(params, "volcano", project)
    splits, attrs = io.read_dataset(out)
    assert {k: len(v) for k, v in splits.items()} == {"train": 661, "val": 83, "test": 83}
    assert attrs["constraint"] == "sphere" and attrs["dim"] == 3 and attrs["seed"] == 0
    assert attrs["source_sha256"] == io.sha256_file(project / "assets/earth/volcano.csv")
    assert attrs["constraint_spec"]["name"] == "sphere"
    all_pts = np.concatenate(list(splits.values()))
    assert np.abs(np.linalg.norm(all_pts, axis=1) - 1).max() < 1e-6
    # the split is seeded: a second write reproduces it
    out.unlink()
    again, _ = io.read_dataset(stages.run_data(params, "volcano", project))
    assert np.array_equal(again["test"], splits["test"])


def test_user_points_violating_the_constraint_are_refused(project):
    pts = np.random.default_rng(0).normal(size=(50, 3))
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    pts[7] *= 1.01
    np.save(project / "mine.npy", pts)
    (project / "params.yaml").write_text((project / "params.yaml").read_text().replace(
        "datasets:\n", "datasets:\n  mine: {kind: file, path: mine.npy, constraint: sphere}\n"))
    params = load_params(project / "params.yaml")
    with pytest.raises(io.DataError, match=r"1 of 50 points violate constraint 'sphere'.*row 7"):
        stages.run_data(params, "mine", project)
    pts[7] /= 1.01
    np.save(project / "mine.npy", pts)
    splits, _ = io.read_dataset(stages.run_data(params, "mine", project))
    assert sum(len(v) for v in splits.values()) == 50


def test_missing_truncated_and_wrong_schema_files_are_named(tmp_path):
    with pytest.raises(io.DataError, match="file not found"):
        io.read_dataset(tmp_path / "absent.h5")
    good = tmp_path / "good.h5"
    x = np.eye(3)
    io.write_dataset(good, {"train": x, "val": x, "test": x}, {"constraint": "sphere", "dim": 3})
    truncated = tmp_path / "trunc.h5"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(io.DataError, match="not a readable HDF5 file|truncated or corrupt"):
        io.read_dataset(truncated)
    nan = tmp_path / "nan.h5"
    bad = x.copy()
    bad[1, 1] = np.nan
    io.write_dataset(nan, {"train": bad, "val": x, "test": x}, {"constraint": "sphere", "dim": 3})
    with pytest.raises(io.DataError, match="NaN or Inf"):
        io.read_dataset(nan)
    with h5py.File(good, "a") as f:
        del f["val"]
    with pytest.raises(io.DataError, match="/val missing"):
        io.read_dataset(good)
    wrong = tmp_path / "wrong.h5"
    io.write_dataset(wrong, {"train": x, "val": x, "test": x}, {"constraint": "sphere", "dim": 4})
    with pytest.raises(io.DataError, match="3 columns"):
        io.read_dataset(wrong)


def test_atomic_write_leaves_previous_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    io.write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_bad_csv_rows_are_reported(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("lat,lon\n10,20\n95,20\n")
    with pytest.raises(io.DataError, match="out of range"):
        read_latlon_csv(p)
    p.write_text("lat,lon\n10,20\nx,y\n")
    with pytest.raises(io.DataError, match="row 3"):
        read_latlon_csv(p)


def test_csv_columns_are_taken_by_their_header_names(tmp_path):
    """issue 28, 3: a 'longitude,latitude' header was skipped unread and 300 points were written swapped."""
    p = tmp_path / "swapped.csv"
    p.write_text("Longitude,Latitude\n120.5,10.0\n-3.25,-45.5\n")
    np.testing.assert_array_equal(read_latlon_csv(p), [[10.0, 120.5], [-45.5, -3.25]])
    p.write_text("id,lng,lat,depth\n7,120.5,10.0,3\n")
    np.testing.assert_array_equal(read_latlon_csv(p), [[10.0, 120.5]])
    p.write_text("x,y\n10,20\n")
    with pytest.raises(io.DataError, match=r"header \[.x., .y.\] names no latitude and longitude column; name the"):
        read_latlon_csv(p)


def test_a_malformed_first_row_of_a_headerless_csv_is_an_error_not_a_header(tmp_path):
    """issue 28, 3: '12.5,abc' as the first row was dropped as if it were a header."""
    p = tmp_path / "bad_first.csv"
    p.write_text("12.5,abc\n10,20\n")
    with pytest.raises(io.DataError, match="row 1 is not 'latitude,longitude' numbers"):
        read_latlon_csv(p)


def test_a_csv_that_is_not_utf8_is_named(tmp_path):
    p = tmp_path / "latin1.csv"
    p.write_bytes("lat,lon\n10,20\n# Québec\n".encode("latin-1"))
    with pytest.raises(io.DataError, match="not UTF-8 text"):
        read_latlon_csv(p)
