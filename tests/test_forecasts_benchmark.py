"""benchmarks/forecasts.py's scoring on hand-made loss curves: spike episodes, recall, precision."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("forecasts")


def test_a_spike_episode_lasts_until_the_loss_is_back_under_1_1x(bench):
    losses = np.array([1.0, 0.9, 1.2, 0.95, 1.2, 0.9, 0.8, 1.0, 0.8])
    # 1.2 > 1.2 × 0.9 starts one; 0.95 ≤ 1.1 × 0.9 ends it; 1.2 starts the next; 1.0 > 1.2 × 0.8 a third
    assert bench.spike_onsets(losses) == [2, 4, 7]
    hovering = np.array([1.0, 1.25, 1.15, 1.25, 1.15, 1.0])  # above 1.1× throughout: one episode
    assert bench.spike_onsets(hovering) == [1]
    assert bench.spike_onsets(np.array([1.0, 0.5, math.inf])) == [2]


def test_recall_counts_spikes_warned_5_to_100_steps_ahead_and_precision_warnings_followed_by_one(bench):
    losses = np.ones(400)
    losses[[3, 150, 300]] = 2.0  # step 3 is too early to count
    warned = [60, 140, 146, 200, 290]  # 60: 90 ahead of 150 (caught, but no spike within 50 after it)
    result = bench.score(losses, warned, steps=350, horizon=50)
    assert result["spikes"] == [150, 300] and result["early_spikes"] == [3]
    assert result["caught"] == [150, 300]  # 150 ← 60 and 140; 300 ← 290 (10 ahead)
    assert result["right_warnings"] == 3  # 140, 146 and 290; 60 and 200 are false
    totals = bench.totals([{**result, "monitored_steps": 350, "overhead": 0.2}])
    assert totals["recall"] == 1.0 and totals["precision"] == pytest.approx(3 / 5)


def test_a_divergence_is_a_spike_even_inside_an_episode(bench):
    losses = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 1.0, 2.0, math.inf])
    result = bench.score(losses, [5], steps=10, horizon=50)
    assert result["spikes"] == [7, 9] and result["right_warnings"] == 1
