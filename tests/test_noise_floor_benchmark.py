"""benchmarks/noise_floor.py and big_steps.py on closed forms: the seed ratio, the goals' count, the
strided Edge Flow's steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import edgeflow as ef
from conftest import load_benchmark
from edgeflow.processes import make_process


@pytest.fixture(scope="module")
def noise():
    return load_benchmark("noise_floor")


def test_seed_ratio_is_read_after_the_crossing_where_gd_reaches_its_share_of_the_peak(noise):
    steps = np.arange(0, 20, 2)
    # a large start (before the crossing at 6, ignored), then growth by 10 per record to the peak
    osc = np.array([1.0, 1e-6, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 0.5, 0.2])
    gd = {"step": steps, "oscillation": osc}
    edge = {"step": steps, "magnitude": 2 * osc}
    # peak 0.5 at step 16: 1% is 5e-3, first reached at step 12 (1e-2)
    assert noise.seed_ratio(gd, edge, cross=6, peak_step=16) == pytest.approx(2.0)
    assert noise.seed_ratio(gd, edge, cross=None, peak_step=16) is None


def test_goals_count_a_zero_error_as_met(noise):
    def case(step_error, height_error):
        row = {"peak": 7.0, "peak_step": 260, "step_error": step_error, "height_error": height_error}
        row |= {"seed_ratio": 1.0, "cost": {"grad": 600, "hvp": 400}}
        gd = {"cross": 168, "peak_step": 260, "peak": 7.0}
        onset = {"gd": gd, "delay": 92, **{v: row for v in noise.VARIANTS}}
        kicks = {"params": 10, "gradient_probe_first_last": [1.0, 1.0], "lag1_correlation": None}
        kicks |= dict.fromkeys(("update_formula", "update_exact", "gradient_probe", "gradient_exact"), 0.01)
        return {"size": "64×2", "dtype": "float64", "steps": 300, "kicks": kicks, "onset": onset}

    data = {
        "meta": {"date": "d", "machine": "m", "wall_min": 1.0},
        "cases": [case(0.0, 0.0), case(0.05, 0.01), case(0.2, 0.01)],
    }
    page = noise.report(data)
    assert "in 2 of 3 runs" in page
    assert "mean step error 8.3%" in page


def test_a_strided_edge_flow_step_of_one_gd_step_is_edge_flow_itself():
    big = load_benchmark("big_steps")
    prob = ef.make_problem("quartic")
    plain = make_process("edge", prob, 0.3, {"substeps": 2})
    strided = big.StridedEdgeFlow(prob, 0.3, 2, substeps=4)  # 4 sub-steps of ½ every 2 GD steps
    plain.init(prob.w0, 0)
    strided.init(prob.w0, 0)
    for k in range(1, 9):
        plain.step()
        strided.step()
        if k % 2 == 0:
            assert torch.allclose(strided.c, plain.c, rtol=1e-12, atol=1e-14)
            assert strided.log_r == pytest.approx(plain.log_r, rel=1e-12)
            assert strided.sign == plain.sign
    assert math.isfinite(strided.log_r)
