"""Results: HDF5 round trip and the documented file layout (docs/results-file.md)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

import edgeflow as ef
from conftest import make_quadratic
from edgeflow.results import FlowRecord, Result

FLOWS = ["gd", "midpoint", "gradient", "modified"]


@pytest.fixture(scope="module")
def result() -> Result:
    q = make_quadratic(d=4)
    return ef.compare(
        q.problem,
        0.15,
        5,
        flows=FLOWS,
        save_params=True,
        record_every=2,
        sharpness_every=2,
        seed=1,
        options={"gradient": {"substep_rate": 0.5}},
        config={"note": "round trip", "nested": {"a": [1, 2.5, None]}},
    )


@pytest.fixture(scope="module")
def diverged_result() -> Result:
    q = make_quadratic(d=3, scale=1e120)
    return ef.compare(q.problem, 0.5, 70, flows=["gd", "gradient"], sharpness_every=10)


def assert_results_equal(a: Result, b: Result) -> None:
    assert b.lr == a.lr
    assert b.config == a.config
    assert sorted(b) == sorted(a)
    for flow in a:
        assert sorted(b[flow]) == sorted(a[flow]), flow
        for field, values in a[flow].items():
            loaded = b[flow][field]
            assert loaded.dtype == values.dtype, (flow, field)
            assert loaded.shape == values.shape, (flow, field)
            assert np.array_equal(loaded, values, equal_nan=True), (flow, field)
        assert b[flow].info == a[flow].info, flow
    assert sorted(b.distances) == sorted(a.distances)
    for key, values in a.distances.items():
        assert b.distances[key].dtype == values.dtype, key
        assert np.array_equal(b.distances[key], values, equal_nan=True), key


def test_round_trip(result, tmp_path):
    path = result.save(tmp_path / "run" / "results.h5")  # creates the missing directory
    assert path == tmp_path / "run" / "results.h5"
    assert path.exists()
    assert not (tmp_path / "run" / "results.h5.tmp").exists()
    loaded = ef.load(path)
    assert_results_equal(result, loaded)
    assert_results_equal(result, Result.load(str(path)))
    assert loaded.threshold == pytest.approx(2 / 0.15)
    # the data survived with their meaning: NaN where the sharpness was not measured, ints for steps
    assert loaded["gd"]["step"].tolist() == [0, 2, 4, 5]
    assert np.isnan(loaded["gd"]["sharpness"][-1])
    assert np.isfinite(loaded["gd"]["sharpness"][:-1]).all()
    assert loaded["gradient"].info["options"] == {"substep_rate": 0.5}
    assert loaded.config["nested"] == {"a": [1, 2.5, None]}
    # saving again over the same file works and changes nothing
    result.save(path)
    assert_results_equal(result, ef.load(path))


def test_round_trip_keeps_divergence(diverged_result, tmp_path):
    res = diverged_result
    k = res["gd"].info["diverged_at"]
    assert isinstance(k, int)
    loaded = ef.load(res.save(tmp_path / "results.h5"))
    assert loaded["gd"].info["diverged_at"] == k
    assert loaded["gradient"].info["diverged_at"] is None
    assert len(loaded["gd"]["step"]) == k
    assert np.isnan(loaded.distances["gradient-gd"][-1])
    assert_results_equal(res, loaded)


def test_file_layout_is_the_documented_one(result, tmp_path):
    path = result.save(tmp_path / "results.h5")
    d = 4
    with h5py.File(path, "r") as f:
        assert float(f.attrs["lr"]) == 0.15
        config = json.loads(f.attrs["config"])
        assert config["lr"] == 0.15
        assert config["flows"] == FLOWS
        assert config["steps"] == 5
        assert config["seed"] == 1
        assert config["note"] == "round trip"
        assert set(f.keys()) == {*FLOWS, "distances"}
        for flow in FLOWS:
            g = f[flow]
            assert isinstance(g, h5py.Group)
            for field in ["step", "train_loss", "sharpness"]:
                assert g[field].ndim == 1, (flow, field)
                assert g[field].shape == (4,), (flow, field)
            assert g["step"][()].tolist() == [0, 2, 4, 5]
            assert np.array_equal(g["train_loss"][()], result[flow]["train_loss"])
            assert g["params"].shape == (4, d)
            info = json.loads(g.attrs["info"])
            assert info["diverged_at"] is None
            assert set(info["cost"]) == {"loss", "grad", "hvp", "third"}
        assert "mean_loss" in f["midpoint"]
        assert "substeps" in f["gradient"]
        dist = f["distances"]
        assert isinstance(dist, h5py.Group)
        assert {"gradient-midpoint", "gradient-gd", "modified-midpoint", "gd-midpoint"} <= set(dist)
        assert dist["step"][()].tolist() == [0, 2, 4, 5]
        for key in dist:
            assert dist[key].shape == (4,), key
        assert np.array_equal(dist["gradient-midpoint"][()], result.distances["gradient-midpoint"])


# BUG (src/edgeflow/results.py, Result.save/Result.load): HDF5 groups are created without
# track_order, so h5py lists them alphabetically and a loaded result iterates its flows (and each
# flow's fields, and the distances) in a different order than the result that was saved: flows
# ["midpoint", "gd", "modified", "gradient"] come back as ["gd", "gradient", "midpoint", "modified"],
# disagreeing with config["flows"] (tables and plots built from a loaded run change order). Fix:
# ``h5py.File(tmp, "w", track_order=True)`` and ``create_group(..., track_order=True)``.
def test_round_trip_keeps_flow_order(tmp_path):
    q = make_quadratic(d=3)
    flows = ["midpoint", "gd", "modified", "gradient"]
    res = ef.compare(q.problem, 0.15, 2, flows=flows)
    assert list(res) == flows
    loaded = ef.load(res.save(tmp_path / "results.h5"))
    assert list(loaded) == flows == loaded.config["flows"]
    assert list(loaded.distances) == list(res.distances)
    for flow in flows:
        assert list(loaded[flow]) == list(res[flow])


def test_load_reads_a_file_written_by_hand(tmp_path):
    """Another tool writing the documented layout is read back (format marker included)."""
    path = tmp_path / "results.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "edgeflow-results/1"
        f.attrs["lr"] = 0.1
        f.attrs["config"] = json.dumps({"problem": "hand"})
        g = f.create_group("gd")
        g.attrs["info"] = json.dumps({"diverged_at": None})
        g.create_dataset("step", data=np.arange(3))
        g.create_dataset("train_loss", data=np.array([3.0, 2.0, 1.0]))
        g.create_dataset("sharpness", data=np.array([1.0, np.nan, 1.5]))
        f.create_group("distances").create_dataset("step", data=np.arange(3))
    res = ef.load(path)
    assert res.lr == 0.1
    assert res.config == {"problem": "hand"}
    assert list(res) == ["gd"]
    assert res["gd"]["train_loss"].tolist() == [3.0, 2.0, 1.0]
    assert res.distances["step"].tolist() == [0, 1, 2]


def test_load_rejects_foreign_hdf5(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ValueError, match="not an edgeflow results file"):
        ef.load(path)


def test_missing_flow_and_field_errors_name_the_choices(result):
    with pytest.raises(KeyError, match=r"'edge'.*gd, midpoint, gradient, modified"):
        result["edge"]
    with pytest.raises(KeyError, match=r"'predicted_loss'.*train_loss"):
        result["gd"]["predicted_loss"]
    assert "gd" in result and "edge" not in result
    assert list(result) == FLOWS


def test_result_built_by_hand_round_trips(tmp_path):
    rec = FlowRecord(
        {"step": np.array([0, 1], dtype=np.int64), "train_loss": np.array([1.0, 0.5])},
        {"diverged_at": None, "cost": {"grad": 1}},
    )
    res = Result(0.3, {"gd": rec}, {"step": np.array([0, 1], dtype=np.int64)}, {"x": 1})
    assert_results_equal(res, ef.load(res.save(tmp_path / "r.h5")))


def test_float32_problem_round_trips(tmp_path):
    q = make_quadratic(d=3)
    p32 = ef.Problem.from_function(lambda w: 0.5 * w @ (q.A.to(w) @ w), q.w0, dtype="float32")
    res = ef.compare(p32, 0.15, 2, flows=["gd"], save_params=True)
    assert res.config["dtype"] == "float32"
    loaded = ef.load(res.save(tmp_path / "r.h5"))
    assert_results_equal(res, loaded)
    assert loaded["gd"]["params"].shape == (3, 3)
    assert np.allclose(loaded["gd"]["params"][0], q.w0.to(torch.float32).numpy())
