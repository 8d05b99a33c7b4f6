"""The chaos floor (benchmarks/chaos_floor.py) on toys whose answer is known, and the smoothed first
peak (edgeflow.metrics.despiked, smoothed_onset_profile) on a trace with a one-record spike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgeflow as ef
from conftest import load_benchmark
from edgeflow.metrics import despiked, onset_profile, smoothed_onset_profile
from edgeflow.zoo import toys

chaos = load_benchmark("chaos_floor")

LOGISTIC_R = 3.9  # the logistic map's chaotic range (Lyapunov exponent ≈ 0.5 per step)


def logistic_problem() -> ef.Problem:
    """GD at η = 1 on L(x) = (1 − r)x²/2 + r x³/3 is the logistic map x ← r x (1 − x)."""

    def loss(w: torch.Tensor) -> torch.Tensor:
        x = w[0]
        return (1 - LOGISTIC_R) * x**2 / 2 + LOGISTIC_R * x**3 / 3

    return ef.Problem.from_function(loss, [0.3], dtype="float64")


def stable_quadratic() -> ef.Problem:
    return toys.quadratic_problem(seed=0, dtype=torch.float64, device="cpu")  # λ ∈ [0.1, 10]


def test_floor_of_a_stable_quadratic_stays_at_the_perturbation():
    # η·λ_max = 0.5: every mode contracts, so two runs 1e-12 apart stay at most that far apart
    case = chaos.Case("quadratic", 60, every=5, lr=0.05)
    out = chaos.measure_case(case, (1,), build=stable_quadratic)
    assert out["perturbation"] == chaos.TARGET_PERTURBATION
    assert out["dtype"] == "float64"
    assert 0 < out["floor"]["median"] < 1e-10
    assert out["floor"]["eos_median"] is None  # never reaches 2/η: no EoS window
    distance = np.array(out["runs"][0]["distance"])
    assert distance[-1] <= distance[0]  # the perturbation shrinks against a travel that grows
    assert out["spread"]["raw"]["height"] is None  # no overshoot to spread


def test_floor_of_a_chaotic_map_grows_to_order_one():
    case = chaos.Case("logistic", 150, every=5, lr=1.0)
    out = chaos.measure_case(case, (1, 2), build=logistic_problem)
    run = out["runs"][0]
    assert run["distance"][0] < 1e-9  # step 5: still at the perturbation's size
    assert out["floor"]["median"] > 0.05  # then O(1): the runs decorrelate
    assert out["floor"]["eos_median"] > 0.05
    assert out["floor"]["median"] == min(r["median"] for r in out["runs"])


def test_perturb_keeps_size_and_refuses_a_size_the_dtype_cannot_hold():
    w = torch.linspace(1.0, 2.0, 1000, dtype=torch.float64)
    p = chaos.perturb(w, 1e-12, seed=3)
    rel = ((p - w) / w).abs()
    assert 0 < float(rel.max()) < 1e-11
    assert torch.equal(chaos.perturb(w, 1e-12, seed=3), p)  # seeded
    with pytest.raises(ValueError, match="leaves every entry"):
        chaos.perturb(w.float(), 1e-12, seed=3)
    assert chaos.perturbation_size(torch.float32) == pytest.approx(2 * torch.finfo(torch.float32).eps)
    assert not torch.equal(chaos.perturb(w.float(), chaos.perturbation_size(torch.float32), 3), w.float())


def test_peak_spread_judges_the_goal_against_the_delay():
    ref = {"cross": 100, "peak": 50.0, "peak_step": 140}
    same = chaos.peak_spread(ref, [dict(ref), {"cross": 100, "peak": 50.5, "peak_step": 145}])
    assert same["height"] == pytest.approx(0.01) and same["steps"] == 5
    assert same["of_delay"] == pytest.approx(5 / 40) and same["within"]
    far = chaos.peak_spread(ref, [{"cross": 100, "peak": 60.0, "peak_step": 140}])
    assert not far["within"]
    gone = chaos.peak_spread(ref, [{"cross": None, "peak": None, "peak_step": None}])
    assert gone["missing"] == 1 and gone["within"] is None


def spiky_trace() -> tuple[np.ndarray, np.ndarray]:
    """A sharpness rising through 5 at step 100, overshooting to 6 over steps 130–150 and dipping,
    with one record at step 60 jumping to 12 and straight back."""
    steps = np.arange(0, 205, 5)
    s = np.interp(steps, [0, 100, 140, 180, 200], [3.0, 5.0, 6.0, 4.5, 5.0])
    s[steps == 60] = 12.0
    return steps, s


def test_smoothed_onset_ignores_a_one_record_spike():
    steps, s = spiky_trace()
    raw = onset_profile(steps, s, 5.0)
    assert (raw["cross"], raw["peak_step"], raw["peak"]) == (60, 60, 12.0)  # the spike is the "peak"
    smooth = smoothed_onset_profile(steps, s, 5.0)
    assert smooth["cross"] == 100
    assert smooth["peak_step"] in (135, 140, 145)
    assert smooth["peak"] == pytest.approx(6.0 - 0.125)  # the top (one record) less one record's rise


def test_despiked_windows_and_nans():
    steps, s = spiky_trace()
    assert np.array_equal(despiked(s, 1), s)
    s[[10, 11]] = np.nan  # unmeasured records are skipped, and stay unmeasured
    out = despiked(s, 3)
    assert np.isnan(out[[10, 11]]).all()
    assert out[0] == s[0] and out[-1] == s[-1]  # the ends have no neighbour on one side: kept
    assert np.nanmax(out) < 6.01
    two = s.copy()
    two[steps == 70] = 15.0  # a second spike one record after the first: the median of 5 removes both
    assert np.nanmax(despiked(two, 5)) < 6.01
    for bad in (0, 2, -1, 3.0, True):
        with pytest.raises(ValueError, match="odd integer"):
            despiked(s, bad)
