"""Metric functions on hand-made trajectories with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from edgeflow.metrics import eos_onset, first_crossing, first_peak, onset_profile, relative_distance
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
