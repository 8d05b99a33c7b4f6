"""Batch sharpness (Andreyev & Beneventano's E_B[g_BᵀH_Bg_B/‖g_B‖²], in a preconditioned step's frame)
against dense Hessians of each batch's own loss; the monitor's report of it; and the mini-batch
benchmark's warning rule and scoring on hand-made series."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import edgeflow as ef
from conftest import build_mlp, load_benchmark
from edgeflow.monitor import batch_sharpness_warning


def dense_quotient(problem: ef.Problem, w: torch.Tensor, indices: torch.Tensor, p_inv) -> float:
    """(P⁻¹g_B)ᵀH_B(P⁻¹g_B) / g_BᵀP⁻¹g_B with H_B from torch.autograd.functional.hessian of the batch's
    mean loss, written out from the model and data independently of Problem.batch."""
    X, y = problem._examples[0][indices], problem._examples[1][indices]
    batch = ef.Problem.from_module(build_mlp(), (X, y), dtype="float64")
    loss = batch.terms[0]
    g = torch.autograd.functional.jacobian(loss, w)
    H = torch.autograd.functional.hessian(loss, w)
    u = p_inv * g
    return float(u @ H @ u / (g @ u))


@pytest.mark.parametrize("frame", ["gd", "adam"])
def test_batch_sharpness_is_the_mean_quotient_over_the_drawn_batches(mlp_problem, frame):
    """Batches of 5 of the 20 examples, disjoint slices of one permutation drawn by the generator: the
    mean of the dense quotients, P⁻¹ = η for GD and a positive diagonal for Adam's frame; one gradient
    and one HVP per batch, and no more batches than n // batch_size."""
    w = mlp_problem.w0 + 0.05
    p_inv = 0.3 if frame == "gd" else torch.rand(mlp_problem.dim, dtype=torch.float64) + 0.1
    before = mlp_problem.counts.copy()
    value = mlp_problem.batch_sharpness(
        w, 5, batches=3, p_inv=p_inv, generator=torch.Generator().manual_seed(5)
    )
    assert (mlp_problem.counts - before).as_dict() == {"loss": 0, "grad": 3, "hvp": 3, "third": 0}
    order = torch.randperm(20, generator=torch.Generator().manual_seed(5))
    expected = np.mean([dense_quotient(mlp_problem, w, order[5 * i : 5 * (i + 1)], p_inv) for i in range(3)])
    assert value == pytest.approx(expected, rel=1e-10)
    before = mlp_problem.counts.copy()
    mlp_problem.batch_sharpness(w, 8, batches=10, p_inv=p_inv)
    assert (mlp_problem.counts - before).grad == 2


def test_full_batch_size_is_the_full_gradients_rayleigh_quotient(make_mlp):
    """batch_size = n: gᵀHg/‖g‖² of the full loss (chunked or not), one evaluation, whatever ``batches``."""
    problem = make_mlp(chunk_size=7)
    w = problem.w0 + 0.05
    g, H = problem.grad(w), problem.hessian(w)
    before = problem.counts.copy()
    value = problem.batch_sharpness(w, 20, batches=4)
    assert (problem.counts - before).grad == 1
    assert value == pytest.approx(float(g @ H @ g / (g @ g)), rel=1e-12)
    # SGD's weight decay λ: the quotient of L + λ‖w‖²/2 along its own gradient
    decayed = g + 0.1 * w
    expected = float(
        decayed @ (H + 0.1 * torch.eye(problem.dim, dtype=H.dtype)) @ decayed / (decayed @ decayed)
    )
    assert problem.batch_sharpness(w, 20, l2=0.1) == pytest.approx(expected, rel=1e-12)


def test_bad_batch_sizes_and_problems_without_examples_are_refused(mlp_problem):
    with pytest.raises(ef.ConfigError, match=r"batch_size must be an integer in \[1, 20\].*got 21"):
        mlp_problem.batch_sharpness(mlp_problem.w0, 21)
    with pytest.raises(ef.ConfigError, match=r"indices must lie in \[0, 19\]"):
        mlp_problem.batch(torch.tensor([3, 20]))
    quadratic = ef.Problem.from_function(lambda w: (w**2).sum(), [1.0, 2.0])
    with pytest.raises(ef.ConfigError, match="no mini-batches"):
        quadratic.batch_sharpness(quadratic.w0, 1)
    with pytest.raises(ef.ConfigError, match="batch_size needs a problem that is a mean over examples"):
        ef.StabilityMonitor(quadratic, 0.1, batch_size=1)
    with pytest.raises(ef.ConfigError, match="batch_size must be at most 20"):
        ef.StabilityMonitor(mlp_problem, 0.1, batch_size=32)


def test_the_monitors_report_carries_the_batch_sharpness_in_its_threshold_units(tiny_data):
    """for_optimizer with batch_size: ``batch_sharpness`` every ``batch_every`` steps with Adam's P⁻¹,
    on the effective sharpness's scale (at most it, for the full batch), counted in the oracle."""
    model = build_mlp(width=4, depth=1).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    mon = ef.StabilityMonitor.for_optimizer(
        opt, model, tiny_data, batch_size=20, batch_every=2, sharpness_every=2, batch_window=2
    )
    X, y = tiny_data
    reports = []
    for _ in range(4):
        opt.zero_grad()
        (0.5 * ((model(X) - torch.nn.functional.one_hot(y, 3).double()) ** 2).sum(1).mean()).backward()
        opt.step()
        reports.append(mon.update())
    assert [math.isfinite(r["batch_sharpness"]) for r in reports] == [True, False, True, False]
    for r in reports[::2]:
        assert 0 < r["batch_sharpness"] <= r["effective_sharpness"] * 1.01
        assert r["batch_warning"] is False  # far below the threshold
    assert mon.problem.counts.grad == 2  # one full batch per measurement
    plain = ef.StabilityMonitor.for_optimizer(opt, model, tiny_data).update()
    assert math.isnan(plain["batch_sharpness"]) and plain["batch_warning"] is False


def test_the_warning_rule_takes_the_median_or_mean_of_the_last_window_of_ratios():
    assert not batch_sharpness_warning([1.5], 2)  # too few measurements
    assert batch_sharpness_warning([0.2, 1.5, 0.5], 2)  # the median of 1.5 and 0.5 is 1
    assert not batch_sharpness_warning([1.5, 0.5, 0.9], 2)
    # one far-off measurement (Adam's first, a blow-up) carries a mean, not a median
    assert not batch_sharpness_warning([0.5, 0.6, 100.0], 3)
    assert batch_sharpness_warning([0.5, 0.6, 100.0], 3, "mean")
    assert batch_sharpness_warning([0.7, 1.2])  # the default: the last measurement
    with pytest.raises(ef.ConfigError, match="window must be a positive integer"):
        batch_sharpness_warning([1.0], 0)
    with pytest.raises(ef.ConfigError, match="unknown statistic 'max'; valid choices: median, mean"):
        batch_sharpness_warning([1.0], 1, "max")


def test_the_benchmark_scores_the_rule_on_a_synthetic_run():
    """A run whose batch sharpness crosses the threshold at step 40 and spikes at step 60: the rule
    warns from its first full window past it on, and the warnings within the horizon are right."""
    bench = load_benchmark("minibatch")
    series = [(k, 0.5 if k < 40 else 1.2) for k in range(1, 101, 5)]
    assert bench.rule_warnings(series, 2, 100)[0] == 46  # measurements at 41 and 46
    assert bench.rule_warnings(series, 4, 100, "median")[0] == 51
    losses = [1.0 - 0.001 * k for k in range(150)]
    losses[60] = 2.0
    run = {
        "n": 64,
        "losses": losses,
        "monitor_warnings": [],
        "sharpness": [(1, 0.5)],
        "batch_sharpness": series,
        "monitored_steps": 100,
        "overhead": {"full": 0.2, "batch": 0.05},
    }
    scored = bench.signals(run, steps=100, horizon=50)
    windowed = scored["batch sharpness (median of 4)"]  # three measurements past 1 (at 51) suffice
    assert windowed["spikes"] == [60] and windowed["caught"] == [60]
    assert scored["monitor"]["caught"] == [] and scored["a ≥ threshold"]["warnings"] == 0
    first = scored["batch sharpness (one measurement)"]
    assert first["first_warning"] == 41 and first["right_warnings"] == 60 - 41
