"""StabilityMonitor: forecasts of GD's loss spikes against closed forms, silence on stable runs."""

from __future__ import annotations

import math

import pytest
import torch

import edgeflow as ef

LAM1, LAM2 = 10.0, 0.01  # a stiff direction and a slow one that carries the loss


def quadratic(x0: float = 1e-6) -> ef.Problem:
    return ef.Problem.from_function(lambda w: 0.5 * (LAM1 * w[0] ** 2 + LAM2 * w[1] ** 2), [x0, 1.0])


def run_gd(problem: ef.Problem, lr: float, steps: int, **kwargs) -> list[dict]:
    """GD with the monitor in the loop; each report gets the oscillation's share of the loss."""
    mon = ef.StabilityMonitor(problem, lr, **kwargs)
    w, reports = problem.w0.clone(), []
    for _ in range(steps):
        loss = float(problem.loss(w))
        rep = mon.update(w, loss=loss)
        rep["share"] = 0.5 * LAM1 * float(w[0]) ** 2
        rep["loss"] = loss
        reports.append(rep)
        w = w - lr * problem.grad(w)
    return reports


def test_forecast_matches_the_closed_form_spike():
    """ηλ₁ = 2.2: GD's x-oscillation grows by exactly 1.2 per step from 1e-6; the spike (the
    oscillation's share of the loss reaching the rest) comes at a step known in closed form."""
    lr = 0.22
    reports = run_gd(quadratic(), lr, 70, horizon=20, sharpness_every=5, spike_ratio=1.0)
    spike = next(r["step"] for r in reports if r["share"] >= r["loss"] - r["share"])
    # x_k = 1e-6·1.2^k against the slowly decaying y: ½λ₁x² = ½λ₂y² near k = 57
    assert 55 <= spike <= 59
    for r in reports[5:spike]:
        if math.isfinite(r["spike_in"]):
            assert abs(r["step"] + r["spike_in"] - spike) <= 2, r
    assert reports[5]["growth"] == pytest.approx(abs(lr * LAM1 - 1), rel=1e-6)
    first = next(r["step"] for r in reports if r["warning"])
    confirm = 5  # the default: a warning needs five consecutive forecasts within the horizon
    assert 20 - 2 - (confirm - 1) <= spike - first <= 20 - (confirm - 1)  # ~horizon ahead, not before


def test_stable_run_gives_no_warning():
    reports = run_gd(quadratic(x0=0.3), 0.15, 200, horizon=50)  # ηλ₁ = 1.5 < 2
    assert not any(r["warning"] for r in reports)
    assert all(r["spike_in"] == math.inf for r in reports)
    measured = [r["sharpness"] for r in reports if math.isfinite(r["sharpness"])]
    assert measured and all(s == pytest.approx(LAM1, rel=1e-6) for s in measured)


def test_settled_period_two_orbit_gives_no_warning():
    """¼(x² − 1)² at η = 1.2: GD settles into a period-2 orbit around x = 1 whose sharpness at the
    iterates says |ηS − 1| > 1 at one of them; the iterates resolve the oscillation and show it
    neither grows nor decays, so nothing is forecast (the forecast from |ηS − 1| alone warned at
    155 of 300 steps)."""
    from edgeflow.zoo.toys import quartic

    lr = 1.2
    problem = ef.Problem.from_function(quartic, [0.5])
    mon = ef.StabilityMonitor(problem, lr, horizon=50, sharpness_every=5)
    w, reports, iterates = problem.w0.clone(), [], []
    for _ in range(300):
        reports.append(mon.update(w))
        iterates.append(float(w[0]))
        w = w - lr * problem.grad(w)
    assert not any(r["warning"] for r in reports[50:])
    assert reports[-1]["growth"] == pytest.approx(1.0, abs=1e-9)
    # the amplitude about the orbit's midpoint, one step back
    assert reports[-1]["oscillation"] == pytest.approx(abs(iterates[-2] - iterates[-3]) / 2, rel=1e-9)


def test_at_most_one_hvp_per_step_on_average(mlp_problem):
    lr = 0.5
    mon = ef.StabilityMonitor(mlp_problem, lr)
    w = mlp_problem.w0.clone()
    before = mlp_problem.counts.hvp
    for _ in range(60):
        mon.update(w)
        w = w - lr * mlp_problem.grad(w)
    assert (mlp_problem.counts.hvp - before) / 60 <= 1.0


def test_module_monitor_reads_the_model(tiny_data):
    from conftest import build_mlp

    model = build_mlp()
    mon = ef.StabilityMonitor.from_module(model, tiny_data, lr=0.5, sharpness_every=1)
    problem = ef.Problem.from_module(build_mlp(), tiny_data)
    rep = mon.update(model)
    # the monitor's Lanczos stops at a 3e-2 relative residual: eigenvalues within about 1%
    assert rep["sharpness"] == pytest.approx(problem.sharpness(problem.w0), rel=1e-2)
    with pytest.raises(ef.ConfigError, match="flat tensor"):
        mon.update(torch.zeros(3))


@pytest.mark.slow
def test_warns_ahead_of_the_catapult_on_the_default_problem():
    """digits-mlp at η = 0.4: GD crosses 2/η near step 170 and its loss spikes near step 263 (the
    first step 20% above its running minimum); the monitor's first warning comes 5–100 steps before,
    at under one HVP per step."""
    import numpy as np

    torch.set_num_threads(1)
    problem, lr = ef.make_problem("digits-mlp"), 0.4
    mon = ef.StabilityMonitor(problem, lr, horizon=50)
    w, losses, warnings, forecasts = problem.w0.clone(), [], [], []
    for k in range(300):
        loss, grad = problem.value_and_grad(w)
        rep = mon.update(w, loss=float(loss))
        losses.append(float(loss))
        warnings.append(rep["warning"])
        forecasts.append(k + rep["spike_in"])
        w = w - lr * grad
    losses = np.array(losses)
    spike = int(np.flatnonzero(losses > 1.2 * np.minimum.accumulate(losses))[0])
    first = warnings.index(True)
    assert 5 <= spike - first <= 100, (first, spike)
    assert all(abs(f - spike) <= 10 for f in forecasts[170:spike])  # measured: within 5 steps
    assert problem.counts.hvp / 300 <= 1.0
