"""benchmarks/instability.py's measurements on closed forms: spikes, the monitor's lead, the goals."""

from __future__ import annotations

import math

import numpy as np
import pytest

import edgeflow as ef
from conftest import load_benchmark

LAM1, LAM2 = 10.0, 0.01


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("instability")


def test_spikes_are_measured_against_the_running_minimum(bench):
    losses = np.array([4.0, 2.0, 1.0, 1.1, 1.3, 0.5, 0.7, math.inf])
    assert bench.first_spike(losses[:7]) == 4  # 1.3 > 1.2 × 1.0
    assert bench.first_spike(losses) == 4
    assert bench.first_spike(np.array([3.0, 2.0, 1.0])) is None
    assert bench.largest_spike(losses) == pytest.approx(1.4)  # 0.7 / 0.5, the overflow left out


def test_monitor_case_times_the_warning_against_the_closed_form_spike(bench):
    """ηλ₁ = 2.2 on a quadratic: GD's x-oscillation grows by 1.2 per step from 1e-6, so its loss
    passes 1.2× its running minimum at a known step; the monitor warns about the horizon ahead."""
    problem = ef.Problem.from_function(lambda w: 0.5 * (LAM1 * w[0] ** 2 + LAM2 * w[1] ** 2), [1e-6, 1.0])
    case = bench.monitor_case(problem, 0.22, steps=70, horizon=20)
    # 1e-12·1.44^k·λ₁/2 reaches 0.2 × ½λ₂y² (y barely moves) near k = 50
    assert 45 <= case["gd_spike"] <= 55
    assert 5 <= case["lead"] <= 20
    assert case["timely_lead"] == case["lead"]
    # the monitor forecasts the loss doubling (share = center), 1.2× comes log √5 / log 1.2 ≈ 4 steps earlier
    assert case["forecast_error_max"] <= 5


def test_goals_name_each_case_that_fails(bench):
    def row(spike, lead, false, warnings, gd_final, gd_spike, gd_div, rec_final, rec_spike):
        remedy = {"diverged_at": None, "initial_loss": 1.0}
        return {
            "monitor": {"gd_spike": spike, "lead": lead, "false_warnings": false, "warnings": warnings},
            "remedies": {
                "gd": {**remedy, "final_loss": gd_final, "largest_spike": gd_spike, "diverged_at": gd_div},
                bench.RECOMMENDED: {**remedy, "final_loss": rec_final, "largest_spike": rec_spike},
            },
        }

    results = {
        "toy": {
            0.1: row(None, None, 0, 0, 0.5, 1.0, None, 0.5, 1.0),
            0.2: row(100, 40, 3, 9, 0.2, 3.0, None, 0.4, 1.0),  # 2× GD's final loss
            0.4: row(50, 150, 0, 9, None, 1e300, 60, 0.3, 1.5),  # warned too early; GD diverged
        }
    }
    goals = bench._goals(results, horizon=50)
    assert "5–100 steps before GD's first spike (lead): holds at 1 of 2; fails at toy η = 0.4 (150)" in goals
    assert "no false warning where GD does not spike in the run: holds at 1 of 1" in goals
    assert "removes the spikes where GD spikes (its largest spike): holds at 1 of 1" in goals
    assert "trains where GD diverges: holds at 1 of 1" in goals
    assert "final loss ≤ 1.5× GD's (ratio): holds at 1 of 2; fails at toy η = 0.2 (2.00×)" in goals


def test_max_share_page_reports_final_loss_against_gds_and_gds_divergence(bench):
    def row(final, spike):
        return {"final_loss": final, "largest_spike": spike, "gradients_per_step": 4.0}

    grids = {
        "toy": {
            0.5: {"gd": row(2.0, 1.0), 0.25: row(3.0, 1.05)},
            4.0: {"gd": row(None, math.inf), 0.25: row(1.0, 1.1)},
        }
    }
    page = bench.share_markdown(grids, 100)
    assert "| toy | 0.5 | 0.25 | 1.05 | 3 | 1.5 | 4.00 |" in page
    assert "| toy | 4 | 0.25 | 1.1 | 1 | GD diverged | 4.00 |" in page
