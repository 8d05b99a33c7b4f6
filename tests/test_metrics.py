"""Metric functions on hand-made trajectories with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from edgeflow.metrics import (
    eos_onset,
    error_traces,
    first_crossing,
    first_peak,
    onset_profile,
    oscillation_period,
    relative_distance,
)
from edgeflow.results import FlowRecord, Result


def hand_made_sharpness():
    steps = np.arange(0, 101, 5)
    # rises linearly 1 → 6, crosses 5 at step 40, peaks at 7 (step 55), dips to 4.5 (step 70), then
    # hovers in [4.9, 5.1]
    s = np.interp(steps, [0, 40, 55, 70, 75, 100], [1, 5, 7, 4.5, 5.1, 4.9])
    s[steps == 80] = np.nan  # a record without a sharpness measurement
    return steps, s


def test_onset_profile_on_a_known_trace():
    steps, s = hand_made_sharpness()
    assert first_crossing(steps, s, 5.0) == 40
    assert first_peak(steps, s, 40) == (55, 7.0)
    profile = onset_profile(steps, s, 5.0, dip_window=20)
    assert profile == {"cross": 40, "peak_step": 55, "peak": 7.0, "dip_step": 70, "dip": 4.5}


def test_plateau_bumps_are_not_an_overshoot():
    steps = np.arange(0, 200, 5)
    rng = np.random.default_rng(0)
    plateau = np.minimum(1 + steps / 20, 8.0) + 1e-9 * rng.standard_normal(len(steps))
    assert first_crossing(steps, plateau, 4.9) == 80
    assert first_peak(steps, plateau, 80) is None
    # a bump that is only 0.5% high is not an overshoot at min_drop = 1%, but is at 0.1%
    bump = plateau.copy()
    bump[steps == 150] *= 1.005
    assert first_peak(steps, bump, 80) is None
    assert first_peak(steps, bump, 80, min_drop=1e-3) == (150, pytest.approx(bump[steps == 150][0]))


def test_a_peak_at_the_crossing_record_counts():
    # GD can cross 2/η in one jump and start falling at once (a 1-D period-2 orbit does)
    steps = np.arange(8)
    s = np.array([-0.7, 0.2, 1.4, 2.0, 1.99, 1.9, 1.8, 1.8])
    assert first_crossing(steps, s, 1.8) == 3
    assert first_peak(steps, s, 3) == (3, 2.0)


def test_mean_loss_error_is_undefined_once_gd_has_converged():
    steps = np.arange(6)
    gd_mean = np.array([1.0, 0.5, 1e-3, 1e-20, 1e-30, 0.0])
    midpoint = FlowRecord(
        {"step": steps, "sharpness": np.ones(6), "train_loss": gd_mean, "mean_loss": gd_mean}
    )
    gradient = FlowRecord({"step": steps, "sharpness": np.ones(6), "train_loss": 2 * gd_mean + 1e-25})
    res = Result(0.5, {"midpoint": midpoint, "gradient": gradient}, {"step": steps, "midpoint-w0": steps})
    err = error_traces(res, "gradient")["mean_loss"]
    assert err[:3] == pytest.approx([1.0, 1.0, 1.0])
    assert np.isnan(err[3:]).all()  # below √ε · L̄(0): rounding noise, not a prediction error


def test_no_crossing_no_peak():
    steps = np.arange(10)
    s = np.linspace(1, 2, 10)
    assert first_crossing(steps, s, 5.0) is None
    assert onset_profile(steps, s, 5.0) == {
        "cross": None,
        "peak_step": None,
        "peak": None,
        "dip_step": None,
        "dip": None,
    }


def test_relative_distance_and_eos_summary_of_a_hand_made_result():
    steps, s = hand_made_sharpness()
    n = len(steps)
    flows = {
        "midpoint": FlowRecord({"step": steps, "sharpness": s, "train_loss": np.ones(n)}, {}),
        "edge": FlowRecord({"step": steps, "sharpness": s, "train_loss": np.ones(n)}, {}),
    }
    moved = np.linspace(0.0, 2.0, n)
    distances = {"step": steps, "edge-midpoint": 0.1 * moved, "midpoint-w0": moved}
    res = Result(0.4, flows, distances)
    rel = relative_distance(res, "edge")
    assert np.isnan(rel[0])  # GD has not moved yet: undefined, not infinite
    np.testing.assert_allclose(rel[1:], 0.1)
    assert relative_distance(res, "gradient") is None
    eos = eos_onset(res)
    assert (eos["onset_step"], eos["peak_step"], eos["dip_step"]) == (40, 55, 70)
    assert eos["after_dip_min"] == pytest.approx(4.9)
    assert eos["after_dip_max"] == pytest.approx(5.1)


def test_fidelity_errors_on_a_hand_made_result():
    steps, s = hand_made_sharpness()
    n = len(steps)
    gd_mean = np.full(n, 0.5)
    midpoint = FlowRecord(
        {
            "step": steps,
            "sharpness": s,
            "train_loss": np.full(n, 0.4),
            "mean_loss": gd_mean,
            "oscillation": np.full(n, 0.2),
        }
    )
    edge = FlowRecord(
        {
            "step": steps,
            "sharpness": s + 0.5,  # error 0.5 · η/2 = 0.1 wherever both are measured
            "train_loss": np.full(n, 0.4),
            "predicted_mean_loss": gd_mean * 1.1,  # 10% high
            "magnitude": np.full(n, 0.3),  # 50% high
        }
    )
    # gradient flow diverged after step 50: its records stop there
    keep = steps <= 50
    gradient = FlowRecord(
        {"step": steps[keep], "sharpness": s[keep], "train_loss": np.full(keep.sum(), 0.25)}
    )
    moved = np.linspace(0.0, 2.0, n)
    distances = {
        "step": steps,
        "edge-midpoint": 0.1 * moved,
        "gradient-midpoint": np.where(keep, 0.3 * moved, np.nan),
        "midpoint-w0": moved,
    }
    res = Result(0.4, {"midpoint": midpoint, "edge": edge, "gradient": gradient}, distances)
    fid = res.metrics()
    e, g = fid["edge"], fid["gradient"]
    assert e["distance_median"] == pytest.approx(0.1)
    assert e["mean_loss_eos_mean"] == pytest.approx(0.1)
    assert e["sharpness_median"] == pytest.approx(0.1)
    assert e["oscillation_eos_median"] == pytest.approx(0.5)
    assert g["distance_median"] == pytest.approx(0.3)
    assert g["mean_loss_median"] == pytest.approx(0.5)  # predicts L(c) = 0.25 against 0.5
    assert g["sharpness_median"] == 0.0
    assert g["distance_eos_median"] == pytest.approx(0.3)  # EoS window starts at GD's crossing (40)
    assert "oscillation_median" not in g
    assert fid["midpoint"]["onset"]["cross"] == 40
    assert e["onset"]["cross"] == 35  # s + 0.5 reaches 5 one record earlier
    eos = error_traces(res, "gradient")
    assert eos["step"].tolist() == steps[keep].tolist()


def test_oscillation_period_from_successive_peaks():
    steps = np.arange(0, 200)
    values = 5 + np.sin(2 * np.pi * steps / 40)
    assert oscillation_period(steps, values, 0) == 40
    assert oscillation_period(steps, values, None) is None
    # one overshoot, then a settled trace with rounding-level wiggles: no period
    settled = np.where(steps < 20, values, 5.0 + 1e-9 * np.sin(steps))
    assert oscillation_period(steps, settled, 0) is None


def test_metrics_need_gd_midpoint():
    res = Result(0.1, {"gd": FlowRecord({"step": np.arange(3)})}, {"step": np.arange(3)})
    with pytest.raises(ValueError, match="midpoint"):
        res.metrics()


def test_metrics_and_results_do_not_import_each_other():
    """results.py imports metrics (Result.metrics); metrics names Result only in type hints."""
    import ast
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "edgeflow"

    def runtime_imports(module: str) -> set[str]:
        tree = ast.parse((src / f"{module}.py").read_text())
        hints_only = {
            id(node)
            for guard in ast.walk(tree)
            if isinstance(guard, ast.If) and "TYPE_CHECKING" in ast.unparse(guard.test)
            for node in ast.walk(guard)
        }
        return {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and id(node) not in hints_only
        }

    assert "edgeflow.metrics" in runtime_imports("results")
    assert "edgeflow.results" not in runtime_imports("metrics")
